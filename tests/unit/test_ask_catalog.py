"""``services.discovery.ask_catalog``: an edge asking the catalog for placement replicas gets
its answer, or the caller's fallback when the catalog cannot say; either way the discovery
it opened is closed."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from services import discovery
from services.discovery import DiscoveryUnavailable, ask_catalog
from tests.mesh_harness import mesh_config


class Catalog:
    """A named stand-in for a discovery: answers or fails, and records that it was closed."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.closed = False

    async def placement_endpoints(self) -> list[str]:
        if self.fail:
            raise DiscoveryUnavailable("consul at 127.0.0.1:1: connection refused")
        return ["10.0.0.1:50050"]

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("fail", "expected"), [(False, ["10.0.0.1:50050"]), (True, [])])
async def test_the_catalogs_answer_or_the_fallback_and_the_discovery_is_closed(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, fail: bool,
        expected: list[str]) -> None:
    catalog = Catalog(fail)
    monkeypatch.setattr(discovery, "open_discovery", lambda *_: catalog)
    got: Any = await ask_catalog(mesh_config(tmp_path), lambda d: d.placement_endpoints(), [],
                                 "using the configured placement replicas")
    assert got == expected
    assert catalog.closed
