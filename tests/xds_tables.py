"""Route tables for the xDS unit tests: one model, two deployments (a cheap one with one
slot, a dearer one with eight) in edge region r-east."""

from __future__ import annotations

from services.api.switchyard.v1 import placement_pb2


def cand(dep: str, cost: float, p95: float, concurrency: int) -> placement_pb2.Candidate:
    backend, variant = dep.split("/")
    return placement_pb2.Candidate(
        deployment_id=dep, backend_id=backend, endpoint="127.0.0.1:9000", variant=variant,
        region="r-east", cloud="aws", quality=0.9, latency_p95_ms=p95, cost_usd=cost,
        compute_ms=50.0, spare_capacity=100.0, concurrency=concurrency)


TABLE = placement_pb2.RouteTable(
    model="summarize", edge_region="r-east", version=3, default_slo_ms=300,
    candidates=[cand("small/s", 1e-6, 80, 1), cand("big/s", 2e-6, 60, 8)])
