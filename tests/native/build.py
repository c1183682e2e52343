"""Build ``fake_nvml.c`` into ``<dir>/libnvidia-ml.so.1`` with gcc, and the environment to use it.

pynvml loads the library at ``nvmlInit`` with ``CDLL("libnvidia-ml.so.1")``, so a process
started with :func:`nvml_env` (``LD_LIBRARY_PATH`` = that directory) runs the real pynvml
against the fake.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

SOURCE = pathlib.Path(__file__).with_name("fake_nvml.c")
LIBRARY = "libnvidia-ml.so.1"


def build_fake_nvml(directory: pathlib.Path) -> pathlib.Path:
    """Compile the fake into ``directory``; return the library's path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build tests/native/fake_nvml.c")
    out = directory / LIBRARY
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror",
                    "-o", str(out), str(SOURCE), "-lpthread"], check=True)
    return out


def nvml_env(directory: pathlib.Path, config: pathlib.Path) -> dict[str, str]:
    """This process's environment with the fake library first and its config file named."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [str(directory), env.get("LD_LIBRARY_PATH", "")]))
    env["FAKE_NVML_CONFIG"] = str(config)
    return env
