"""The Helm chart with ``placement.shards`` (issue 15, scale-out): one placement Deployment,
PodDisruptionBudget and Service per shard, the shards written into the mounted mesh file as
their Services, and every pod's rendered args parsed by the services' own argparsers: a
placement pod owns its shard's regions, the agent reports each backend to its region's shard
and an Envoy edge takes ADS from the shard owning its region."""

from __future__ import annotations

import pathlib
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from services.config import MeshConfig, load_config
from services.placement import shard
from tests.unit.test_helm_chart import (
    CHART,
    ENVOY,
    _without_consul,
    by_kind,
    containers,
    edge_containers,
    overrides,
    render,
)

SHARDS = [{"name": "aws", "regions": ["aws-us-east-1", "aws-us-west-2"], "replicas": 2},
          {"name": "gcp", "regions": ["gcp-us-central1", "gcp-europe-west4"], "replicas": 3}]
SERVICE = "sy-switchyard-placement-{}.switchyard.svc:50050"


def _values() -> dict[str, Any]:
    values = dict(overrides("multiregion") or {})
    values["placement"] = {**values["placement"], "shards": SHARDS}
    return {**values, **ENVOY}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(_values())


def _mesh(docs: list[dict[str, Any]], tmp: pathlib.Path) -> MeshConfig:
    data = by_kind(docs, "ConfigMap")[0]["data"]
    text = data["mesh.toml"]
    if "consul" not in MeshConfig.model_fields:
        text = _without_consul(text)
    (tmp / "mesh.toml").write_text(text)
    (tmp / "prices.toml").write_text(data["prices.toml"])
    return load_config(tmp / "mesh.toml")


def _local(args: list[str], tmp: pathlib.Path) -> list[str]:
    return [str(tmp / "mesh.toml") if a == "/etc/switchyard/mesh.toml" else a for a in args]


def test_one_placement_deployment_pdb_and_service_per_shard(
        docs: list[dict[str, Any]]) -> None:
    placements = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")
                  if d["metadata"]["labels"]["app.kubernetes.io/component"] == "placement"}
    assert sorted(placements) == ["sy-switchyard-placement-aws", "sy-switchyard-placement-gcp"]
    pdbs = {p["metadata"]["name"]: p for p in by_kind(docs, "PodDisruptionBudget")}
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    for s in SHARDS:
        name = f"sy-switchyard-placement-{s['name']}"
        d = placements[name]
        assert d["spec"]["replicas"] == s["replicas"]
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector["switchyard.io/shard"] == s["name"]  # pods of one shard only
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selector
        assert services[name]["spec"]["selector"] == selector
        anti = d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert all(t["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
                   for t in anti["preferredDuringSchedulingIgnoredDuringExecution"])
    assert "sy-switchyard-placement" not in services


@pytest.mark.parametrize("kube", ["1.30.0", "1.37.0"])
def test_every_sharded_manifest_is_valid_kubernetes(docs: list[dict[str, Any]],
                                                    kube: str) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, kube, strict=True)


def test_the_sharded_chart_lints_clean() -> None:
    report = helm.lint(CHART, _values(), strict=True, namespace="switchyard",
                       kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_each_placement_pod_owns_its_shards_regions_by_its_rendered_args(
        docs: list[dict[str, Any]], tmp_path: pathlib.Path) -> None:
    from services.cli import parser

    cfg = _mesh(docs, tmp_path)
    assert [(s.replicas, s.regions) for s in cfg.placement.shards] == [
        ([SERVICE.format(s["name"])], s["regions"]) for s in SHARDS]
    pods = {name: c for name, _, c in containers(docs) if "-placement-" in name}
    for s in SHARDS:
        args = parser().parse_args(_local(pods[f"sy-switchyard-placement-{s['name']}"]["args"],
                                          tmp_path)[2:])
        assert args.command == "placement" and args.shard_address == SERVICE.format(s["name"])
        assert shard.ownership(cfg, args.shard_address).regions == set(s["regions"])


def test_agents_and_envoy_edges_find_their_shards_in_the_mesh_file(
        docs: list[dict[str, Any]], tmp_path: pathlib.Path) -> None:
    from services.agent.cli import _parser, build_agent
    from services.edge.envoy.launcher import placement_addresses

    cfg = _mesh(docs, tmp_path)
    agent = by_kind(docs, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--placement" not in agent["args"]  # a fixed one would turn the shards off
    kubelet = {"$(NODE_NAME)": "gpu-node-7", "$(HOST_IP)": "10.1.2.3"}
    args = _local(agent["args"], tmp_path)
    for k, v in kubelet.items():
        args = [a.replace(k, v) for a in args]
    built = build_agent(_parser().parse_args(args[2:]), {})
    (region,) = {b.region for b in built.backends}
    owner = next(s for s in SHARDS if region in s["regions"])
    assert [replicas for replicas, _ in built.shards] == [[SERVICE.format(owner["name"])]]
    for e in cfg.edges:
        _, c = edge_containers(docs)[e.id]
        assert "--placement" not in c["args"]  # from the mesh file, by the edge's region
        owner = next(s for s in SHARDS if e.region in s["regions"])
        assert placement_addresses(cfg, e.region) == [SERVICE.format(owner["name"])]


@pytest.mark.parametrize(("values", "message"), [
    ({"placement": {"shards": [{"name": "AWS", "regions": ["r"], "replicas": 1}]}},
     "at '/placement/shards/0/name'"),
    ({"placement": {"shards": [{"name": "aws", "regions": [], "replicas": 1}]}},
     "at '/placement/shards/0/regions'"),
    ({"mesh": {"placement": {"port": 50050, "metrics_port": 9150, "shards": []}}},
     "at '/mesh/placement'"),  # the chart's placement.shards owns it
])
def test_broken_shard_values_are_rejected_by_the_schema(values: dict[str, Any],
                                                        message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as err:
        chart.render(values, name="sy")
    assert message in str(err.value)
