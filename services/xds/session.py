"""One Envoy's delta-xDS conversation: what it subscribed to, what it holds, what to send next.

No I/O here: ``server.py`` feeds requests in and sends what :meth:`DeltaSession.push` returns.
Per resource type the session remembers the version (content hash) of every resource the
Envoy was last sent (seeded from ``initial_resource_versions`` when it reconnects), so a push
carries only what changed plus the names that disappeared. Clusters and listeners are
wildcard subscriptions; route configurations are named (the listener asks for its own).

A NACK (a request carrying ``error_detail``) is logged with Envoy's own message and counted;
the session does not resend the rejected content (Envoy would reject it again) and keeps
serving: the next change of that resource is pushed as usual, so a bad push never wedges the
stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from services.xds.resources import CLUSTER, LISTENER, Resource

log = structlog.get_logger("switchyard.xds")

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


@dataclass
class Nack:
    type_url: str
    nonce: str
    message: str


@dataclass(eq=False)  # one per stream, compared by identity
class DeltaSession:
    node_id: str
    region: str
    sent: dict[str, dict[str, str]] = field(default_factory=dict)  # type -> name -> version
    names: dict[str, set[str]] = field(default_factory=dict)  # named subscriptions per type
    opened: set[str] = field(default_factory=set)  # types Envoy asked for
    unanswered: set[str] = field(default_factory=set)  # asked for, owed a first response
    nonces: dict[str, str] = field(default_factory=dict)  # nonce -> type_url
    nacks: list[Nack] = field(default_factory=list)
    acks: int = 0
    _next_nonce: int = 0

    def receive(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """Record an ACK, a NACK or a (un)subscription."""
        t = req.type_url
        if req.response_nonce:
            self.nonces.pop(req.response_nonce, None)
            if req.HasField("error_detail"):
                nack = Nack(t, req.response_nonce, req.error_detail.message)
                self.nacks.append(nack)
                log.warning("xds_nack", node=self.node_id, type_url=t, nonce=nack.nonce,
                            error=nack.message)
            else:
                self.acks += 1
        if t not in self.opened:
            self.opened.add(t)
            self.unanswered.add(t)
            if req.initial_resource_versions:
                self.sent[t] = dict(req.initial_resource_versions)
        names = self.names.setdefault(t, set())
        names.update(n for n in req.resource_names_subscribe if n != "*")
        for n in req.resource_names_unsubscribe:
            names.discard(n)
            self.sent.get(t, {}).pop(n, None)

    def wanted(self, type_url: str, offered: Mapping[str, Resource]) -> dict[str, Resource]:
        if type_url in WILDCARD_TYPES:
            return dict(offered)
        subscribed = self.names.get(type_url, set())
        return {n: r for n, r in offered.items() if n in subscribed}

    def push(self, type_url: str, offered: Mapping[str, Resource], system_version: str
             ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """The response that brings this Envoy to ``offered``; None when it is there already."""
        if type_url not in self.opened:
            return None
        want = self.wanted(type_url, offered)
        have = self.sent.setdefault(type_url, {})
        changed = [r for n, r in sorted(want.items()) if have.get(n) != r.version]
        gone = sorted(n for n in have if n not in want)
        if not changed and not gone and type_url not in self.unanswered:
            return None
        self.unanswered.discard(type_url)
        self._next_nonce += 1
        nonce = f"{self._next_nonce}"
        self.nonces[nonce] = type_url
        resp = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, system_version_info=system_version, nonce=nonce,
            removed_resources=gone)
        for r in changed:
            packed = any_pb2.Any()
            packed.Pack(r.message)
            resp.resources.append(discovery_pb2.Resource(name=r.name, version=r.version,
                                                         resource=packed))
            have[r.name] = r.version
        for n in gone:
            del have[n]
        return resp
