"""``sy-before``: the whole Switchyard config as an older commit's ``services/xds`` compiles it,
for ``benchmarks/envoy_filters.py --before DIR`` (before/after in one run).

``DIR`` is an export of the old commit (``git worktree add`` or ``git archive``). The bootstrap
is assembled by THIS checkout's ``benchmarks/envoy_configs.py`` (so both sides are built the
same way) from the old ``services/xds``, in a subprocess whose import path starts at ``DIR``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks._fleet import MODEL

NAME = "sy-before"
_CONFIGS = pathlib.Path(__file__).with_name("envoy_configs.py")

_SCRIPT = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location("envoy_configs_now", sys.argv[2])
ec = importlib.util.module_from_spec(spec)
sys.modules["envoy_configs_now"] = ec
spec.loader.exec_module(ec)
import pathlib, services.xds
if not pathlib.Path(services.xds.__file__).resolve().is_relative_to(sys.argv[1]):
    sys.exit(f"services.xds came from {services.xds.__file__}, not from {sys.argv[1]}")
print(json.dumps(ec.VARIANTS["sy"].bootstrap(sys.argv[3], sys.argv[4], int(sys.argv[5]),
                                             int(sys.argv[6]))))
"""


def bootstrap_from(before: pathlib.Path, triton: str, placement: str, port: int,
                   admin_port: int) -> dict[str, Any]:
    """``sy``'s bootstrap with ``before``'s ``services/xds`` (the old commit's config)."""
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(before.resolve()), str(_CONFIGS), triton,
         placement, str(port), str(admin_port)],
        cwd=before, capture_output=True, text=True, check=False, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"the config of {before} did not compile: {out.stderr.strip()}")
    boot: dict[str, Any] = json.loads(out.stdout)
    return boot


@dataclass(frozen=True)
class BeforeVariant:
    """``sy`` as ``before`` compiles it (started like a ``Variant``)."""

    before: pathlib.Path
    name: str = NAME
    model: str = MODEL

    @property
    def what(self) -> str:
        return f"all of Switchyard as {self.before.name} compiles it"

    def bootstrap(self, triton: str, placement: str, port: int,
                  admin_port: int) -> dict[str, Any]:
        return bootstrap_from(self.before, triton, placement, port, admin_port)
