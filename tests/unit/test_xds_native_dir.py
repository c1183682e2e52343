"""Where the Envoy dynamic module is looked for (``services.xds.native.module_dir``): an
installed image's directory (``SWITCHYARD_ENVOY_MODULE_DIR``, docker/Dockerfile), else the
source tree's ``native/build``."""

from __future__ import annotations

import pathlib
import shutil

from services.xds import native


def test_without_the_variable_the_source_trees_build() -> None:
    assert native.module_dir({}) == native.SOURCE_BUILD_DIR
    assert native.module_dir({native.MODULE_DIR_ENV: ""}) == native.SOURCE_BUILD_DIR
    assert native.SOURCE_BUILD_DIR.parts[-2:] == ("native", "build")


def test_a_module_installed_elsewhere_is_found_and_loads(tmp_path: pathlib.Path) -> None:
    where = native.module_dir({native.MODULE_DIR_ENV: str(tmp_path)})
    assert where == tmp_path
    assert not native.available(where)
    assert native.choose("auto", where)[0] is False  # nothing there: the Lua
    shutil.copy(native.module_path(native.SOURCE_BUILD_DIR), native.module_path(where))
    loads, why = native.choose("auto", where)
    assert loads, why
    assert native.envoy_env(where)[native.SEARCH_PATH_ENV] == str(tmp_path)
