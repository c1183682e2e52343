"""The per-filter benchmark's health-check variants (``benchmarks/envoy_configs.py``
``HEALTH``): ``sy-no-hc`` is ``sy`` without the deployment cluster's active checks and
nothing else, ``sy-sb<N>`` is ``sy`` plus N health-checked clusters no route names."""

from __future__ import annotations

from typing import Any

from benchmarks import envoy_configs as ec

TRITON, PLACEMENT = "127.0.0.1:9001", "127.0.0.1:9002"


def _boot(name: str) -> dict[str, Any]:
    return ec.VARIANTS[name].bootstrap(TRITON, PLACEMENT, 9003, 9004)


def _clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def _deployments(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: c for n, c in _clusters(boot).items() if n.startswith("dep:")}


def test_sy_checks_its_deployment_and_sy_no_hc_is_the_same_without_the_checks() -> None:
    sy, off = _boot("sy"), _boot("sy-no-hc")
    checks = _clusters(sy)[ec.DEP_CLUSTER]["health_checks"]
    assert len(checks) == 1 and "grpc_health_check" in checks[0]
    assert "health_checks" not in _clusters(off)[ec.DEP_CLUSTER]
    _clusters(sy)[ec.DEP_CLUSTER].pop("health_checks")
    assert sy == off  # nothing else differs


def test_standby_variants_add_checked_clusters_no_route_names() -> None:
    for name, n in (("sy-sb50", 50), ("sy-sb200", 200)):
        boot = _boot(name)
        deps = _deployments(boot)
        assert len(deps) == n + 1
        standbys = [c for d, c in deps.items() if d != ec.DEP_CLUSTER]
        assert all(float(c["health_checks"][0]["no_traffic_interval"].rstrip("s")) ==
                   ec.SETTINGS.health_idle_s for c in standbys)
        routed = {r["route"]["cluster"] for vh in
                  boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                  ["typed_config"]["route_config"]["virtual_hosts"] for r in vh["routes"]
                  if "cluster" in r.get("route", {})}
        assert not routed & set(deps) - {ec.DEP_CLUSTER}
        base = _boot("sy")
        assert {k: v for k, v in _clusters(boot).items() if k not in deps or
                k == ec.DEP_CLUSTER} == _clusters(base)
