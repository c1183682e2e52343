"""Where the Envoy config build's time goes at fleet scale (issues 12 + 15).

``python -m benchmarks.ads_profile [--sizes 1000,5000,10000] [--profile] [--fanout N]``: one edge region
whose one model has N synthetic rows (N backends in ``controlplane.REGIONS``, one variant
each, estimates and prices spread as a fleet's are); times ``compile_region`` cold (first
compile), again with nothing changed, and after one row's flip (the probe's change), and
the delta-ADS push to one session: bytes of the first push, of the flip, and of a flip of
the row every order starts with (the worst one-row change). ``--profile``: cProfile of each step, top
functions by cumulative time. ``--fanout N``: a change through the ADS server's own path to N
sessions of the region, per phase (``fanout``). Wall time on this host.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import time
from collections.abc import Callable
from typing import Any

from placement.registry import build_profile
from services.api.switchyard.v1 import placement_pb2

REGIONS = ["aws-us-east-1", "aws-us-west-2", "gcp-us-central1", "gcp-europe-west4",
           "azure-eastus"]


SPREAD = [10.0]  # ms of compute estimates spread (0: every backend's alike, as controlplane's)


def candidate(i: int, rng: random.Random) -> placement_pb2.Candidate:
    bid = f"be-{i:06d}"
    region = REGIONS[i % len(REGIONS)]
    rtt = [1.0, 60.0, 30.0, 90.0, 10.0][i % len(REGIONS)]
    compute = round(40 + rng.uniform(-0.5, 0.5) * SPREAD[0], 1)
    return placement_pb2.Candidate(
        deployment_id=f"{bid}/chat-v1", backend_id=bid,
        endpoint=f"10.{i // 62500}.{i // 250 % 250}.{i % 250}:{8000 + i % 50000}",
        variant="chat-v1", region=region, cloud=region.split("-")[0], accelerator="nvidia-l4",
        quality=0.8, latency_p95_ms=rtt + compute * 1.5, rtt_ms=rtt, compute_ms=compute,
        cost_usd=round(rng.uniform(4e-6, 6e-6), 9), spare_capacity=rng.uniform(10, 100),
        concurrency=4, edge_slots=0.04)


def tables(n: int, seed: int = 0, flipped: int | None = None) -> list[placement_pb2.RouteTable]:
    rng = random.Random(seed)
    cands = [candidate(i, rng) for i in range(n)]
    if flipped is not None:
        cands[flipped].dropped_reason = "Triton server not ready"
    return [placement_pb2.RouteTable(model="chat", edge_region=REGIONS[0], version=1,
                                     default_slo_ms=500, candidates=cands)]


def timed(label: str, fn: Callable[[], Any], profile: bool) -> Any:
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    out = fn()
    if prof:
        prof.disable()
    print(f"  {label}: {(time.perf_counter() - t0) * 1e3:,.0f} ms", flush=True)
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(18)
        print("\n".join(s.getvalue().splitlines()[6:30]))
    return out


def main() -> None:
    from services.xds.resources import CLUSTER, ROUTE, EnvoySettings, compile_region
    try:
        from services.xds.resources import CompileCache
    except ImportError:  # a checkout before the cache
        CompileCache = None  # noqa: N806
    from services.xds.session import DeltaSession
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--spread", type=float, default=10.0,
                    help="ms of spread in compute estimates (0: alike, few SLO classes)")
    ap.add_argument("--fanout", type=int, default=0,
                    help="N sessions: time a change through the ADS server to each of them")
    args = ap.parse_args()
    SPREAD[0] = args.spread
    if args.fanout:
        rows = [r for n in args.sizes.split(",") for r in fanout(int(n), args.fanout)]
        print(FANOUT_HEADER)
        print("\n".join(rows))
        return
    profile, s = build_profile("cheapest", 0.05), EnvoySettings()
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        print(f"{n:,} deployments", flush=True)
        base, flip = tables(n), tables(n, flipped=n // 2)
        kw = {} if CompileCache is None else {"cache": CompileCache()}
        t = time.perf_counter()
        rc = timed("compile (first)", lambda: compile_region(REGIONS[0], base, profile, s, **kw),
                   args.profile)
        first_ms = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        timed("compile (nothing changed)",
              lambda: compile_region(REGIONS[0], base, profile, s, **kw), args.profile)
        same_ms = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        rc2 = timed("compile (one row flipped)",
                    lambda: compile_region(REGIONS[0], flip, profile, s, **kw), args.profile)
        flip_ms = (time.perf_counter() - t) * 1e3
        sess = DeltaSession("edge", REGIONS[0])
        for t in (CLUSTER, ROUTE):
            sess.receive(placement_pb2_req(t))
        first = timed("push (first, clusters)", lambda: sess.push(CLUSTER, rc.clusters, "1"),
                      args.profile)
        first_b = _size(first) + _size(sess.push(ROUTE, rc.routes, "1"))
        t = time.perf_counter()
        resp = timed("push (flip, clusters)", lambda: sess.push(CLUSTER, rc2.clusters, "2"),
                     args.profile)
        push_ms = (time.perf_counter() - t) * 1e3
        flip_b = _size(resp) + _size(sess.push(ROUTE, rc2.routes, "2"))
        # the worst single flip: the row every order starts with goes
        head = int(rc.models["chat"].default[0].split("/")[0].removeprefix("be-"))
        rc3 = compile_region(REGIONS[0], tables(n, flipped=head), profile, s, **kw)
        head_b = (_size(sess.push(CLUSTER, rc3.clusters, "3"))
                  + _size(sess.push(ROUTE, rc3.routes, "3")))
        route = rc2.routes[next(iter(rc2.routes))].message.ByteSize()
        classes = len(rc2.models["chat"].classes)
        rows.append(f"| {n:,} | {classes} | {first_ms:,.0f} | {same_ms:,.0f} | {flip_ms:,.0f} | "
                    f"{push_ms:,.0f} | {first_b:,} | {flip_b:,} | {head_b:,} | {route:,} |")
        print(f"  flip: {len(resp.resources) if resp else 0} clusters, {flip_b:,} B; "
              f"first row flipped: {head_b:,} B", flush=True)
    print("| deployments | SLO classes | compile, first (ms) | compile, nothing changed (ms) | "
          "compile, one row flipped (ms) | delta push of the flip, one session (ms) | "
          "first push, clusters + routes (B) | pushed for the flip (B) | "
          "pushed when the orders' first row flips (B) | route configuration (B) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


class _Hub:
    """The tables an ``AdsServer`` reads (a ``RouteHub``'s ``version`` and ``snapshot``)."""

    def __init__(self, n: int) -> None:
        self.version, self.n, self.flipped = 1, n, None
        self._built: dict[int | None, list[placement_pb2.RouteTable]] = {}

    def snapshot(self, region: str) -> list[placement_pb2.RouteTable]:
        """Built once per state (the hub keeps its tables: building them is not timed)."""
        if self.flipped not in self._built:
            self._built[self.flipped] = tables(self.n, flipped=self.flipped)
        return self._built[self.flipped]


def fanout(n: int, sessions: int) -> list[str]:
    """One region of ``n`` rows and ``sessions`` delta-ADS sessions on the server's own path
    (``AdsServer``: inputs taken on the loop, compile, apply, then per session the offer and
    its four pushes, each response serialized as gRPC does per stream): ms per phase for
    the sessions' first config and for the probe's kind of change (the orders' first row
    goes unusable), and the bytes one session is sent. Returns table rows."""
    from services.xds.resources import CLUSTER, LISTENER, ROUTE, EnvoySettings
    from services.xds.server import AdsServer
    from services.xds.session import DeltaSession
    hub = _Hub(n)
    ads = AdsServer(hub, build_profile("cheapest", 0.05), EnvoySettings())  # type: ignore[arg-type]
    subs = []
    for i in range(sessions):
        sess = DeltaSession(f"edge-{i}", REGIONS[0])
        for t in (CLUSTER, LISTENER, ROUTE):
            sess.receive(placement_pb2_req(t))
        subs.append(sess)
    out = []
    for label in ("first config", "orders' first row flipped"):
        if label != "first config":
            head = ads.region_config(REGIONS[0]).models["chat"].default[0]
            hub.flipped = int(head.split("/")[0].removeprefix("be-"))
            hub.version += 1
        hub.snapshot(REGIONS[0])
        t0 = time.perf_counter()
        inputs = ads._inputs(REGIONS[0])
        t1 = time.perf_counter()
        assert inputs is not None
        compiled = ads._compile_off_loop(REGIONS[0], inputs)
        t2 = time.perf_counter()
        rc = ads._apply(REGIONS[0], inputs, compiled)
        t3 = time.perf_counter()
        sent = 0
        for i, sess in enumerate(subs):
            offered = ads.offer(REGIONS[0], "127.0.0.1", 50051 + i, 0, rc)
            delta = ads.cluster_delta(REGIONS[0], 0, offered[CLUSTER])
            for t, res, keep in ((CLUSTER, offered[CLUSTER], True),
                                 (LISTENER, offered[LISTENER], False),
                                 (ROUTE, offered[ROUTE], False),
                                 (CLUSTER, offered[CLUSTER], False)):
                resp = sess.push(t, res, str(hub.version),
                                 delta=delta if t == CLUSTER else None, keep=keep)
                if resp is not None:
                    b = len(resp.SerializeToString())
                    sent += b if i == 0 else 0
        t4 = time.perf_counter()
        out.append(f"| {n:,} | {sessions} | {label} | {(t1 - t0) * 1e3:,.0f} | "
                   f"{(t2 - t1) * 1e3:,.0f} | {(t3 - t2) * 1e3:,.0f} | {(t4 - t3) * 1e3:,.0f} | "
                   f"{sent:,} |")
        print(out[-1], flush=True)
    return out


FANOUT_HEADER = ("| deployments | sessions | change | inputs on the loop (ms) | compile, worker "
                 "thread (ms) | apply on the loop (ms) | every session's pushes, serialized, on "
                 "the loop (ms) | bytes to one session |\n|---:|---:|:---|---:|---:|---:|---:|---:|")


def _size(resp: Any) -> int:
    return int(resp.ByteSize()) if resp is not None else 0


def placement_pb2_req(type_url: str) -> Any:
    from envoy.service.discovery.v3 import discovery_pb2
    return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url,
                                               resource_names_subscribe=[f"routes:{REGIONS[0]}"])


if __name__ == "__main__":
    main()
