"""StaticDiscovery, the price/policy documents, meta round-trip and blocking-query rules."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from placement.errors import ConfigError
from services.api.switchyard.v1 import fleet_pb2
from services.config import load_config
from services.convert import backends_from_config
from services.discovery import (
    ConsulSettings,
    Discovery,
    HealthCheck,
    StaticDiscovery,
    open_discovery,
)
from services.discovery.blocking import Backoff, IndexTracker, TokenBucket, jittered_wait
from services.discovery.documents import (
    merge_prices,
    parse_document,
    prices_from_document,
)
from services.discovery.meta import META_VALUE_MAX, backend_from_service, backend_meta

REPO = pathlib.Path(__file__).resolve().parents[2]
PRICES = """
[[prices]]
accelerator = "nvidia-l4"
cloud = "gcp"
region = "*"
price_class = "spot"
usd_per_gpu_hour = 0.28
instance = "g2-standard-4"
source = "https://example.test/price-list"
as_of = "2025-03-06"
"""


def _mesh(tmp_path: pathlib.Path, prices: str = PRICES) -> pathlib.Path:
    mesh = tmp_path / "mesh.toml"
    mesh.write_text((REPO / "examples" / "mesh.toml").read_text())
    (tmp_path / "prices.toml").write_text(prices)
    return mesh


async def test_static_from_config_lists_backends_prices_and_placement(
        tmp_path: pathlib.Path) -> None:
    config = load_config(_mesh(tmp_path))
    disco = StaticDiscovery.from_config(config)
    assert isinstance(disco, Discovery)
    state = await disco.snapshot()
    assert [e.backend.id for e in state.backends] == sorted(b.id for b in config.backends)
    assert all(e.healthy for e in state.backends)
    h100 = next(e.backend for e in state.backends if e.backend.id == "use1-h100")
    assert h100.cloud == "aws"
    assert h100.endpoint == "127.0.0.1:8101"
    assert ("summarize", "summarize-large", 0.90) in [
        (v.logical_model, v.variant, round(v.quality, 2)) for v in h100.variants]
    assert [(p.accelerator, p.region, p.usd_per_gpu_hour) for p in state.prices] == [
        ("nvidia-l4", "*", 0.28)]
    assert await disco.placement_endpoints() == ["127.0.0.1:50050"]
    assert state.source == "static"
    assert not state.stale


async def test_open_discovery_chooses_static_by_default(tmp_path: pathlib.Path) -> None:
    disco = open_discovery(load_config(_mesh(tmp_path)))
    assert isinstance(disco, StaticDiscovery)


def test_the_shipped_prices_file_parses() -> None:
    disco = StaticDiscovery.from_config(load_config(REPO / "examples" / "mesh.toml"))
    state = asyncio.run(disco.snapshot())
    assert len(state.prices) > 10
    assert all(p.source and p.as_of for p in state.prices)


async def test_register_and_deregister_are_watched(tmp_path: pathlib.Path) -> None:
    disco = StaticDiscovery.from_config(load_config(_mesh(tmp_path)))
    updates = disco.watch()
    first = await anext(updates)
    extra = fleet_pb2.Backend(id="new-1", endpoint="10.0.0.9:8001", cloud="aws",
                              region="aws-us-east-1", accelerator="nvidia-l4")
    await disco.register(extra, HealthCheck("grpc", "10.0.0.9:8001"))
    second = await asyncio.wait_for(anext(updates), 1)
    assert "new-1" in second.backend_ids()
    assert second.version > first.version
    await disco.deregister("new-1")
    third = await asyncio.wait_for(anext(updates), 1)
    assert "new-1" not in third.backend_ids()
    await disco.close()


def test_missing_prices_file_names_the_path(tmp_path: pathlib.Path) -> None:
    mesh = _mesh(tmp_path)
    (tmp_path / "prices.toml").unlink()
    with pytest.raises(ConfigError, match=r"prices\.toml does not exist"):
        StaticDiscovery.from_config(load_config(mesh))


@pytest.mark.parametrize(("text", "message"), [
    ('[[prices]]\naccelerator = "x"\n', r"prices\[0\]: missing cloud, price_class"),
    (PRICES.replace('"spot"', '"cheap"'), r"price_class 'cheap' is not one of"),
    (PRICES.replace("0.28", "-1"), r"usd_per_gpu_hour -1 must be a number >= 0"),
    (PRICES + 'colour = "red"\n', r"unknown field\(s\) \['colour'\]"),
    ("[[prices]\n", r"neither valid JSON .* nor valid TOML"),
])
def test_bad_price_documents_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prices_from_document(parse_document(text, "doc"), "doc")


def test_json_price_documents_and_overlay() -> None:
    base = prices_from_document(parse_document(PRICES, "file"), "file")
    kv = prices_from_document(parse_document(
        '{"accelerator": "nvidia-l4", "cloud": "gcp", "region": "*", "price_class": "spot",'
        ' "usd_per_gpu_hour": 0.5}', "kv"), "kv")
    merged = merge_prices(base, kv)
    assert [p.usd_per_gpu_hour for p in merged] == [0.5]


def test_meta_round_trip_with_many_variants() -> None:
    backend = fleet_pb2.Backend(
        id="b1", endpoint="10.1.2.3:8001", cloud="gcp", region="gcp-us-central1",
        accelerator="nvidia-l4", accelerator_count=2, price_class="spot", max_concurrency=8,
        variants=[fleet_pb2.VariantRef(logical_model=f"model-{i}", variant=f"model-{i}-int4",
                                       quality=0.5) for i in range(40)])
    meta = backend_meta(backend)
    assert all(len(v) <= META_VALUE_MAX for v in meta.values())
    assert "variants_1" in meta
    service = {"ID": "b1", "Address": "10.1.2.3", "Port": 8001, "Meta": meta}
    assert backend_from_service(service) == backend


def test_index_tracker_follows_consuls_rules() -> None:
    t = IndexTracker()
    assert t.update("100") == 100
    assert t.update("100") == 100        # timeout, no change
    assert t.update("40") == 0           # went backwards: reset, restart the loop
    assert t.resets == 1
    assert t.update("41") == 41
    assert t.update("0") == 0            # below the previous one: reset
    assert t.update("0") == 1            # a zero index never turns into a busy loop
    assert t.update(None) == 0


async def test_token_bucket_allows_a_burst_then_limits() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(2, 5.0, clock=lambda: now[0], sleep=sleep)
    assert await bucket.take() == 0
    assert await bucket.take() == 0
    assert await bucket.take() == pytest.approx(5.0)
    now[0] += 20
    assert await bucket.take() == 0
    assert slept == [pytest.approx(5.0)]


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(0.5, 4.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    assert jittered_wait(30, 0.1, rand=lambda: 1.0) == "27000ms"


def test_consul_settings_validate_and_name_the_field(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"consul\.address 'consul:8500' must look like"):
        ConsulSettings(address="consul:8500")
    with pytest.raises(ValueError, match=r"cert_file .* and consul\.tls\.key_file"):
        ConsulSettings.model_validate({"tls": {"cert_file": "/c.pem"}})
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    s = ConsulSettings(address="https://consul.service:8501", token_file=str(token))
    assert s.host_port == ("consul.service", 8501)
    assert s.scheme == "https"
    assert s.resolved_token() == "s3cret"


def test_static_backends_resolve_variant_models(tmp_path: pathlib.Path) -> None:
    backends = backends_from_config(load_config(_mesh(tmp_path)))
    assert {v.logical_model for b in backends for v in b.variants} == {"summarize", "generate"}
