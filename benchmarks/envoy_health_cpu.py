"""What Envoy's active gRPC health checks cost: CPU per check, in Envoy and in Triton.

    python -m benchmarks.envoy_health_cpu [--clusters 50] [--seconds 20]

One real Triton (``benchmarks._fleet``) and one real Envoy holding ``--clusters`` deployment
clusters as placement compiles them (``services/xds/clusters.py``), all pointing at that
Triton, carrying no calls; checked at the 1 s interval (``health_idle_s`` set to it, so the
rate is the one of clusters that carry calls), then the same Envoy config with the checks
off. The CPU time (user + system, ``/proc/<pid>/stat``) Envoy and Triton spent over the same
window, with checks minus without, divided by the checks Envoy counted
(``health_check.attempt``), is the cost of one check. CPU time, not wall time: a loaded host
stretches the window, not the work.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.request
from dataclasses import replace

from benchmarks import envoy_configs as ec
from benchmarks._fleet import REGION, VARIANT, Fleet, _wait_port
from services.api.switchyard.v1 import placement_pb2
from services.ports import free_port
from services.xds import resources

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def admin(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return str(r.read().decode())


def attempts(port: int) -> int:
    text = admin(port, "/stats?filter=health_check.attempt$")
    return sum(int(line.rsplit(": ", 1)[1]) for line in text.splitlines() if ": " in line)


def run(fleet: Fleet, clusters: int, seconds: float, checks: bool) -> tuple[float, float, int]:
    """(Envoy CPU s, Triton CPU s, checks) over ``seconds`` once the clusters are warm."""
    port, admin_port = free_port(), free_port()
    c = ec.plain(fleet.triton_address, "127.0.0.1:1", port, admin_port)
    s = replace(ec.SETTINGS, health_idle_s=1.0) if checks else replace(
        ec.SETTINGS, health_interval_s=None)
    for i in range(clusters):
        d = f"bench-hc-{i}/{VARIANT}"
        c.clusters[resources.cluster_name(d)] = ec._dict(resources.deployment_cluster(
            placement_pb2.Candidate(deployment_id=d, backend_id=f"bench-hc-{i}",
                                    endpoint=fleet.triton_address, variant=VARIANT,
                                    region=REGION), s))
    proc = fleet.start_envoy(f"hc-{port}", c.bootstrap())
    try:
        _wait_port(f"127.0.0.1:{port}", 60)  # the listener: every cluster has warmed
        time.sleep(2.0)  # settle after start (a measurement window, not a wait)
        assert fleet.triton is not None
        tpid = fleet.triton.pid
        e0, t0, a0 = cpu_s(proc.pid), cpu_s(tpid), attempts(admin_port)
        time.sleep(seconds)  # the measurement window
        return (cpu_s(proc.pid) - e0, cpu_s(tpid) - t0, attempts(admin_port) - a0)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clusters", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    with Fleet() as fleet:
        fleet.start_triton()
        on = run(fleet, args.clusters, args.seconds, checks=True)
        off = run(fleet, args.clusters, args.seconds, checks=False)
    checks = on[2]
    print(f"{args.clusters} deployment clusters, {args.seconds:.0f} s window, "
          f"{checks} checks ({checks / args.seconds:.1f}/s); with checks off: {off[2]}")
    d = ec.SETTINGS
    for name, i in (("Envoy", 0), ("Triton", 1)):
        per = (on[i] - off[i]) / checks * 1e6 if checks else float("nan")
        print(f"  {name}: CPU {on[i]:.2f} s with checks, {off[i]:.2f} s without: "
              f"{per:.0f} us per check; {args.clusters} deployment clusters at the defaults "
              f"({d.health_idle_s:g} s carrying no calls, {d.health_interval_s:g} s carrying "
              f"calls): {per * args.clusters / d.health_idle_s / 1e4:.2f} to "
              f"{per * args.clusters / (d.health_interval_s or 1.0) / 1e4:.2f} % of a core")


if __name__ == "__main__":
    main()
