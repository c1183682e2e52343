"""The Python backend's shared-memory files of the tritonservers Switchyard runs.

Triton's Python backend keeps each model instance's memory in ``/dev/shm/<prefix><uuid>``
(``--backend-config=python,shm-region-prefix-name=<prefix>``; the default prefix is
``triton_python_backend_shm_region_``, shared by every server on the machine). A server that
is killed cannot remove them. Each server Switchyard starts gets a prefix of its own, so the
files of a dead one can be removed without touching anyone else's.
"""

from __future__ import annotations

import contextlib
import pathlib
import uuid

SHM_DIR = pathlib.Path("/dev/shm")  # noqa: S108 - where shm_open keeps the backend's regions


def shm_prefix_for(name: str, token: str = "") -> str:
    """A shared-memory name prefix no other server uses: ``sy_<name>_<token>_``, the token
    12 random hex digits unless given."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40]
    return f"sy_{safe}_{token or uuid.uuid4().hex[:12]}_"


def remove_shm(prefix: str) -> list[pathlib.Path]:
    """Unlink ``/dev/shm/<prefix>*`` (call only once their server is dead); a stub still
    mapping one keeps its memory until it exits, only the name goes."""
    removed = []
    for path in SHM_DIR.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed
