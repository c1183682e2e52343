"""One Envoy's xDS conversation: what it subscribed to, what it holds, what to send next.

No I/O here: ``server.py`` feeds requests in and sends what ``push`` returns. Clusters and
listeners are wildcard subscriptions; route configurations are named (the listener asks for
its own). Two variants of the protocol, one session class each:

- :class:`DeltaSession` (delta ADS): per resource type it remembers the version (content
  hash) of every resource the Envoy was last sent (seeded from ``initial_resource_versions``
  when it reconnects), so a push carries only what changed plus the names that disappeared;
- :class:`SotwSession` (state of the world): every push carries the whole wanted set of a
  type, versioned by a hash of its members' versions, and only when that hash moved or the
  subscription changed.

A NACK (a request carrying ``error_detail``) is logged with Envoy's own message and counted;
the session does not resend the rejected content (Envoy would reject it again) and keeps
serving: the next change of that resource is pushed as usual, so a bad push never wedges the
stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from services.xds.resources import CLUSTER, LISTENER, Resource

log = structlog.get_logger("switchyard.xds")

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


@dataclass
class Nack:
    type_url: str
    nonce: str
    message: str


@dataclass
class Replies:
    """The nonces one Envoy was sent and its ACKs and NACKs of them."""

    node_id: str
    outstanding: dict[str, str] = field(default_factory=dict)  # nonce -> type_url
    nacks: list[Nack] = field(default_factory=list)
    acks: int = 0
    _next_nonce: int = 0

    def issue(self, type_url: str) -> str:
        self._next_nonce += 1
        nonce = str(self._next_nonce)
        self.outstanding[nonce] = type_url
        return nonce

    def record(self, type_url: str, nonce: str, error: status_pb2.Status | None) -> None:
        self.outstanding.pop(nonce, None)
        if error is None:
            self.acks += 1
            return
        nack = Nack(type_url, nonce, error.message)
        self.nacks.append(nack)
        log.warning("xds_nack", node=self.node_id, type_url=type_url, nonce=nonce,
                    error=nack.message, code=error.code)


def _wanted(type_url: str, names: set[str], offered: Mapping[str, Resource]
            ) -> dict[str, Resource]:
    if type_url in WILDCARD_TYPES:
        return dict(offered)
    return {n: r for n, r in offered.items() if n in names}


def _pack(r: Resource) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(r.message)
    return packed


@dataclass(eq=False)  # one per stream, compared by identity
class DeltaSession:
    node_id: str
    region: str
    sent: dict[str, dict[str, str]] = field(default_factory=dict)  # type -> name -> version
    names: dict[str, set[str]] = field(default_factory=dict)  # named subscriptions per type
    opened: set[str] = field(default_factory=set)  # types Envoy asked for
    unanswered: set[str] = field(default_factory=set)  # asked for, owed a first response
    replies: Replies = field(init=False)

    def __post_init__(self) -> None:
        self.replies = Replies(self.node_id)

    def receive(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """Record an ACK, a NACK or a (un)subscription."""
        t = req.type_url
        if req.response_nonce:
            self.replies.record(t, req.response_nonce,
                                req.error_detail if req.HasField("error_detail") else None)
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

    def push(self, type_url: str, offered: Mapping[str, Resource], system_version: str
             ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """The response that brings this Envoy to ``offered``; None when it is there already."""
        if type_url not in self.opened:
            return None
        want = _wanted(type_url, self.names.get(type_url, set()), offered)
        have = self.sent.setdefault(type_url, {})
        changed = [r for n, r in sorted(want.items()) if have.get(n) != r.version]
        gone = sorted(n for n in have if n not in want)
        if not changed and not gone and type_url not in self.unanswered:
            return None
        self.unanswered.discard(type_url)
        resp = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, system_version_info=system_version,
            nonce=self.replies.issue(type_url), removed_resources=gone,
            resources=[discovery_pb2.Resource(name=r.name, version=r.version,
                                              resource=_pack(r)) for r in changed])
        for r in changed:
            have[r.name] = r.version
        for n in gone:
            del have[n]
        return resp


@dataclass(eq=False)  # one per stream, compared by identity
class SotwSession:
    node_id: str
    region: str
    sent: dict[str, str] = field(default_factory=dict)  # type -> version_info last sent
    names: dict[str, set[str]] = field(default_factory=dict)
    unanswered: set[str] = field(default_factory=set)  # (re)subscribed, owed a response
    replies: Replies = field(init=False)

    def __post_init__(self) -> None:
        self.replies = Replies(self.node_id)

    @property
    def opened(self) -> set[str]:
        return set(self.names)

    def receive(self, req: discovery_pb2.DiscoveryRequest) -> None:
        t = req.type_url
        if req.response_nonce:
            self.replies.record(t, req.response_nonce,
                                req.error_detail if req.HasField("error_detail") else None)
        names = set(req.resource_names) - {"*"}
        if t not in self.names or names != self.names[t]:
            self.names[t] = names
            self.unanswered.add(t)

    def push(self, type_url: str, offered: Mapping[str, Resource], system_version: str
             ) -> discovery_pb2.DiscoveryResponse | None:
        if type_url not in self.names:
            return None
        want = _wanted(type_url, self.names[type_url], offered)
        version = hashlib.sha256("".join(f"{n}={r.version};" for n, r in sorted(want.items()))
                                 .encode()).hexdigest()[:16]
        if version == self.sent.get(type_url) and type_url not in self.unanswered:
            return None
        self.unanswered.discard(type_url)
        self.sent[type_url] = version
        return discovery_pb2.DiscoveryResponse(
            type_url=type_url, version_info=version, nonce=self.replies.issue(type_url),
            resources=[_pack(r) for _, r in sorted(want.items())])
