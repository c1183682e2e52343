"""The node agent's Prometheus metrics (``--metrics-port``, on 127.0.0.1 by default).

Every series is read from the agent's own counters at scrape time (one owner of each count:
the session loop, the producer, the NVML reader), so /metrics never disagrees with the
agent's state. Labels are bounded: an outcome from a fixed set, no backend or replica ids.

=================================================  =========================================
series                                             what it counts
=================================================  =========================================
``switchyard_agent_registrations_total{outcome}``  ``RegisterBackend`` calls: ``ok``,
                                                   ``refused`` (another agent holds the id:
                                                   ALREADY_EXISTS, PERMISSION_DENIED),
                                                   ``failed`` (unreachable, any other error)
``switchyard_agent_heartbeats_total{outcome}``     telemetry sessions' rounds to a replica:
                                                   ``sent`` (written on its stream),
                                                   ``failed`` (the write failed or timed
                                                   out: the stream broke, the agent
                                                   reconnects)
``switchyard_agent_telemetry_reports_total``       reports written (a round has one per
                                                   backend)
``switchyard_agent_nvml_errors_total``             NVML calls that failed (other than
                                                   NotSupported) and impossible numbers
                                                   left unset (``nvml.py``)
``switchyard_agent_simulated``                     1 while GPU readings are SIMULATED
``switchyard_agent_connected_replicas``            placement replicas with a live stream
=================================================  =========================================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from services.agent.agent import NodeAgent

REGISTRATION_OUTCOMES = ("ok", "refused", "failed")
HEARTBEAT_OUTCOMES = ("sent", "failed")


class AgentCounts:
    """What the agent counts, by outcome (only the outcomes above are ever used)."""

    def __init__(self) -> None:
        self.registrations: Counter[str] = Counter()
        self.heartbeats: Counter[str] = Counter()

    def registration(self, outcome: str) -> None:
        assert outcome in REGISTRATION_OUTCOMES, outcome
        self.registrations[outcome] += 1

    def heartbeat(self, outcome: str) -> None:
        assert outcome in HEARTBEAT_OUTCOMES, outcome
        self.heartbeats[outcome] += 1


class AgentCollector(Collector):
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        a = self.agent
        reg = CounterMetricFamily("switchyard_agent_registrations",
                                  "RegisterBackend calls by outcome (ok, refused: another "
                                  "agent holds the id, failed: unreachable or other error)",
                                  labels=["outcome"])
        for outcome in REGISTRATION_OUTCOMES:
            reg.add_metric([outcome], a.counts.registrations[outcome])
        yield reg
        beats = CounterMetricFamily("switchyard_agent_heartbeats",
                                    "Telemetry rounds to a placement replica by outcome (sent, "
                                    "failed: the stream broke)", labels=["outcome"])
        for outcome in HEARTBEAT_OUTCOMES:
            beats.add_metric([outcome], a.counts.heartbeats[outcome])
        yield beats
        yield CounterMetricFamily("switchyard_agent_telemetry_reports",
                                  "Telemetry reports written to placement",
                                  value=a.reports_sent)
        yield CounterMetricFamily("switchyard_agent_nvml_errors",
                                  "NVML calls that failed and impossible readings left unset",
                                  value=a.gpu_source.nvml_errors)
        yield GaugeMetricFamily("switchyard_agent_simulated",
                                "1 while the agent's GPU readings are simulated, not NVML",
                                value=1.0 if a.gpu_source.source_name == "simulated" else 0.0)
        yield GaugeMetricFamily("switchyard_agent_connected_replicas",
                                "Placement replicas this agent streams telemetry to now",
                                value=len(a.connected))


def serve_metrics(agent: NodeAgent, port: int, host: str = "127.0.0.1"
                  ) -> tuple[WSGIServer, int]:
    """Serve ``agent``'s /metrics on ``host``:``port`` (0: a free port); the server (for
    ``shutdown()``) and the port it listens on."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
