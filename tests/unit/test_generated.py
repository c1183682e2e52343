"""services/api/ must be what protos/ generates (the one command: python -m scripts.gen_protos)."""

from __future__ import annotations

import subprocess
import sys


def test_generated_code_is_current() -> None:
    out = subprocess.run([sys.executable, "-m", "scripts.gen_protos", "--check"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
