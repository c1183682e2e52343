"""The Grafana dashboard queries only metrics the code exports, and ships with the chart.

Every PromQL expression of every panel is reduced to the series names it reads; each must be
a series the edge's or placement's metric objects export, as Prometheus scrapes them
(prometheus_client appends ``_total`` to counters and ``_bucket``/``_count``/``_sum`` to
histograms). The chart renders the dashboard as a ConfigMap the Grafana sidecar picks up.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from services.edge.main import EdgeMetrics
from services.placement.metrics import PlacementMetrics

CHART = pathlib.Path(__file__).resolve().parents[2] / "helm" / "switchyard"
DASHBOARD = CHART / "dashboards" / "switchyard.json"

# Series each metric type exposes, by family name (prometheus_client's own naming).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
            "summary": ("_count", "_sum", ""), "info": ("_info",), "stateset": ("",),
            "enum": ("",), "unknown": ("",)}
# PromQL words that are not metric names.
SCRAPE_LABELS = ("instance", "job")  # Prometheus adds these to every scraped series
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}


def exported_series(*registries: CollectorRegistry) -> dict[str, str]:
    """Series name → family name, for every metric the registries hold."""
    out = {}
    for reg in registries:
        for family in reg.collect():
            for suffix in SUFFIXES[family.type]:
                out[family.name + suffix] = family.name
    return out


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (selectors), not functions or labels."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)       # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                       # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                      # range and subquery windows
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"(?<![A-Za-z0-9_:])[0-9][0-9A-Za-z_.]*", " ", s)  # numbers, durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word, rest = m.group(), s[m.end():]
        if word.lower() in KEYWORDS or rest.lstrip().startswith("("):
            continue  # a keyword, or a function / aggregation being called
        names.add(word)
    return names


def label_names(expr: str) -> set[str]:
    """Labels a PromQL expression matches on or groups by."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    out = set()
    for block in re.findall(r"\{([^}]*)\}", s):
        out |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", block))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                            s):
        out |= {w.strip() for w in group.split(",") if w.strip()}
    return out


def exported_labels(*holders: object) -> dict[str, set[str]]:
    """Family name → its label names (``le`` too for histograms), from the metric objects.

    prometheus_client exposes label names only on the metric wrapper (``_labelnames``): a
    labelled metric with no child yet collects no samples to read them from.
    """
    out = {}
    for holder in holders:
        for metric in vars(holder).values():
            if isinstance(metric, MetricWrapperBase):
                extra = {"le"} if metric._type == "histogram" else set()
                out[metric._name] = set(metric._labelnames) | extra
    return out


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])  # panels inside collapsed rows


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def exported() -> dict[str, str]:
    return exported_series(EdgeMetrics().registry, PlacementMetrics().registry)


def test_metric_names_are_read_from_promql() -> None:
    expr = ('1000 * sum by (model) (rate(a_total{model=~"$m", status="OK"}[$__rate_interval])'
            ' * on (model, deployment) group_left max by (model, deployment) (b_usd))'
            ' / histogram_quantile(0.99, sum by (le) (rate(c_bucket[5m]))) - d offset 5m > 1e-3')
    assert metric_names(expr) == {"a_total", "b_usd", "c_bucket", "d"}


def test_label_names_are_read_from_promql() -> None:
    expr = ('sum by (model) (rate(a_total{model=~"$m", status!="a=b"}[5m]) * on (model, '
            'deployment) group_left max by (deployment) (b)) / c{le="0.25"}')
    assert label_names(expr) == {"model", "status", "deployment", "le"}


def test_every_panel_uses_labels_its_metrics_have(dashboard: dict[str, Any],
                                                  exported: dict[str, str]) -> None:
    labels = exported_labels(EdgeMetrics(), PlacementMetrics())
    for p in panels(dashboard):
        for t in p.get("targets", []):
            have = set(SCRAPE_LABELS)
            for name in metric_names(t["expr"]):
                have |= labels[exported[name]]
            used = label_names(t["expr"]) | set(re.findall(r"\{\{(\w+)\}\}", t["legendFormat"]))
            assert used <= have, f"panel {p['title']!r}: labels {used - have} not exported"


def test_counters_are_exported_with_total(exported: dict[str, str]) -> None:
    assert exported["switchyard_edge_calls_total"] == "switchyard_edge_calls"
    assert "switchyard_edge_calls" not in exported
    assert "switchyard_edge_call_seconds_bucket" in exported
    assert "switchyard_edge_call_seconds" not in exported  # a histogram has no bare series


def test_every_panel_queries_exported_metrics(dashboard: dict[str, Any],
                                              exported: dict[str, str]) -> None:
    queried = 0
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            names = metric_names(t["expr"])
            assert names, f"panel {p['title']!r}: no metric in {t['expr']!r}"
            unknown = names - exported.keys()
            assert not unknown, f"panel {p['title']!r} queries {unknown}, not exported"
            queried += len(names)
    assert queried


def test_dashboard_covers_the_operators_picture(dashboard: dict[str, Any],
                                                exported: dict[str, str]) -> None:
    read = {exported[n] for p in panels(dashboard) for t in p.get("targets", [])
            for n in metric_names(t["expr"])}
    assert {"switchyard_edge_calls", "switchyard_edge_call_seconds",
            "switchyard_edge_attempts", "switchyard_edge_ejections",
            "switchyard_placement_push_latency_seconds",
            "switchyard_placement_deployment_cost_usd"} <= read
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))
    assert "sum by (status)" in exprs and "sum by (deployment)" in exprs


def test_latency_targets_are_bucket_bounds(dashboard: dict[str, Any]) -> None:
    """``le="$latency_slo"`` only matches a series when the value is a bound as exported."""
    m = EdgeMetrics()
    m.latency.labels("summarize").observe(0.01)
    bounds = {s.labels["le"] for fam in m.registry.collect() for s in fam.samples
              if s.name == "switchyard_edge_call_seconds_bucket"}
    var = next(v for v in dashboard["templating"]["list"] if v["name"] == "latency_slo")
    offered = {o["value"] for o in var["options"]}
    assert offered and offered <= bounds, offered - bounds
    assert var["current"]["value"] in offered


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="sy", namespace="switchyard", is_install=True)
    return [d for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]


def test_chart_ships_the_dashboard_for_the_grafana_sidecar() -> None:
    maps = [d for d in render(None) if d["kind"] == "ConfigMap"
            and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(maps) == 1
    assert maps[0]["metadata"]["name"] == "sy-switchyard-dashboard"
    assert json.loads(maps[0]["data"]["switchyard.json"]) == json.loads(DASHBOARD.read_text())


def test_dashboard_configmap_is_optional() -> None:
    docs = render({"dashboards": {"enabled": False}})
    assert not [d for d in docs if d["kind"] == "ConfigMap"
                and "grafana_dashboard" in d["metadata"]["labels"]]
