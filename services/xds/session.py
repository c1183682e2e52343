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

At fleet scale (10,000 deployment clusters, 100 Envoys) a push must not cost every session a
walk over every cluster: the server hands ``push`` the region's :class:`Delta` (what changed
between two compiles, found once per compile), and a session that holds exactly the older
compile sends the changed names from it without looking at the rest.

A NACK (a request carrying ``error_detail``) is logged with Envoy's own message and counted;
the session does not resend the rejected content (Envoy would reject it again) and keeps
serving: the next change of that resource is pushed as usual, so a bad push never wedges the
stream.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from services.xds.resources import CLUSTER, LISTENER, Resource

log = structlog.get_logger("switchyard.xds")

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
NACKS_KEPT = 32  # per stream
NACK_MESSAGE_KEPT = 4096  # characters of a NACK's error message kept (and logged)


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
    # the newest NACKs (an Envoy in a NACK loop, or a peer sending NACKs without end, keeps
    # its stream's memory bounded); ``nack_count`` counts them all
    nacks: deque[Nack] = field(default_factory=lambda: deque(maxlen=NACKS_KEPT))
    nack_count: int = 0
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
        nack = Nack(type_url, nonce, error.message[:NACK_MESSAGE_KEPT])
        self.nacks.append(nack)
        self.nack_count += 1
        log.warning("xds_nack", node=self.node_id, type_url=type_url, nonce=nonce,
                    error=nack.message, code=error.code)


def _wanted(type_url: str, names: set[str], offered: Mapping[str, Resource]
            ) -> Mapping[str, Resource]:
    if type_url in WILDCARD_TYPES:
        return offered
    return {n: r for n, r in offered.items() if n in names}


@dataclass(frozen=True, eq=False)
class Delta:
    """From one compiled set of a wildcard type to the next: ``changed`` (sorted) are the
    names in ``after`` that are new or have another version, ``gone`` (sorted) the names of
    ``before`` not in ``after``."""

    before: Mapping[str, Resource]
    after: Mapping[str, Resource]
    changed: tuple[str, ...]
    gone: tuple[str, ...]

    @classmethod
    def between(cls, before: Mapping[str, Resource], after: Mapping[str, Resource]) -> Delta:
        return cls(before, after,
                   tuple(sorted(n for n, r in after.items()
                                if (b := before.get(n)) is None or b.version != r.version)),
                   tuple(sorted(n for n in before if n not in after)))


def _pack(r: Resource) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(r.message)
    return packed


# (name, version) -> the resource as a delta response carries it, packed once for every
# session it is sent to (a version is a content hash); cleared when it grows past the fleet
_PACKED: dict[tuple[str, str], discovery_pb2.Resource] = {}
PACKED_MAX = 200_000


def _delta_resource(r: Resource) -> discovery_pb2.Resource:
    got = _PACKED.get((r.name, r.version))
    if got is None:
        if len(_PACKED) >= PACKED_MAX:
            _PACKED.clear()
        got = _PACKED[(r.name, r.version)] = discovery_pb2.Resource(
            name=r.name, version=r.version, resource=_pack(r))
    return got


@dataclass(eq=False)  # one per stream, compared by identity
class DeltaSession:
    node_id: str
    region: str
    sent: dict[str, dict[str, str]] = field(default_factory=dict)  # type -> name -> version
    names: dict[str, set[str]] = field(default_factory=dict)  # named subscriptions per type
    opened: set[str] = field(default_factory=set)  # types Envoy asked for
    unanswered: set[str] = field(default_factory=set)  # asked for, owed a first response
    replies: Replies = field(init=False)
    # wildcard type -> what ``sent`` holds exactly: ("all", offered), or ("kept", delta):
    # delta.after sent, delta.before's gone names not removed yet (``push(keep=True)``)
    _holds: dict[str, tuple[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replies = Replies(self.node_id)

    def receive(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """Record an ACK, a NACK or a (un)subscription."""
        t = req.type_url
        if req.response_nonce:
            self.replies.record(t, req.response_nonce,
                                req.error_detail if req.HasField("error_detail") else None)
        if req.resource_names_subscribe or req.resource_names_unsubscribe:
            self._holds.pop(t, None)
        if t not in self.opened:
            self._holds.pop(t, None)
            self.opened.add(t)
            self.unanswered.add(t)
            if req.initial_resource_versions:
                self.sent[t] = dict(req.initial_resource_versions)
        names = self.names.setdefault(t, set())
        names.update(n for n in req.resource_names_subscribe if n != "*")
        for n in req.resource_names_unsubscribe:
            names.discard(n)
            self.sent.get(t, {}).pop(n, None)

    def push(self, type_url: str, offered: Mapping[str, Resource], system_version: str,
             delta: Delta | None = None, keep: bool = False
             ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """The response that brings this Envoy to ``offered``; None when it is there already.
        ``keep``: remove nothing yet (make before break: the next push of ``offered`` does);
        ``delta``: how ``offered`` differs from the set compiled before it (a shortcut only:
        used when this Envoy holds exactly that set)."""
        if type_url not in self.opened:
            return None
        have = self.sent.setdefault(type_url, {})
        fast = (None if type_url in self.unanswered or type_url not in WILDCARD_TYPES
                else self._shortcut(type_url, offered, delta, keep))
        if fast is not None:
            changed = [offered[n] for n in fast[0] if have.get(n) != offered[n].version]
            gone = [n for n in fast[1] if n in have]
        else:
            want = _wanted(type_url, self.names.get(type_url, set()), offered)
            changed = [want[n] for n in sorted(n for n, r in want.items()
                                               if have.get(n) != r.version)]
            gone = [] if keep else sorted(n for n in have if n not in want)
        if type_url in WILDCARD_TYPES:
            self._holds[type_url] = (("kept", delta) if keep and delta is not None
                                     and delta.after is offered and fast is not None
                                     else ("all", offered) if not keep
                                     else ("unknown", None))
        if not changed and not gone and type_url not in self.unanswered:
            return None
        self.unanswered.discard(type_url)
        resp = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, system_version_info=system_version,
            nonce=self.replies.issue(type_url), removed_resources=gone,
            resources=[_delta_resource(r) for r in changed])
        for r in changed:
            have[r.name] = r.version
        for n in gone:
            del have[n]
        return resp

    def new_names(self, type_url: str, offered: Mapping[str, Resource],
                  delta: Delta | None = None) -> list[str]:
        """The names of ``offered`` this Envoy does not hold (sorted); from ``delta`` without
        walking ``offered`` when what it holds is known."""
        have = self.sent.get(type_url, {})
        how, what = self._holds.get(type_url, ("unknown", None))
        if how == "all" and what is offered:
            return []
        if delta is not None and delta.after is offered:
            if how == "kept" and what is delta:
                return []
            if how == "all" and what is delta.before:
                return [n for n in delta.changed if n not in have]
        return sorted(n for n in offered if n not in have)

    def held_versions(self, type_url: str) -> Mapping[str, str]:
        """Name -> version of what this Envoy holds of ``type_url`` (as it was sent)."""
        return self.sent.get(type_url, {})

    def held_beyond(self, type_url: str, offered: Mapping[str, Resource]) -> bool:
        """This Envoy holds names ``offered`` lacks (right after a ``keep`` push of
        ``offered``, which holds all of it: no walk)."""
        return len(self.sent.get(type_url, {})) > len(offered)

    def _shortcut(self, type_url: str, offered: Mapping[str, Resource], delta: Delta | None,
                  keep: bool) -> tuple[Sequence[str], Sequence[str]] | None:
        """(names that may have changed, names that may be gone) without walking
        ``offered``, when what this Envoy holds is known; None: walk it."""
        how, what = self._holds.get(type_url, ("unknown", None))
        if how == "all" and what is offered:
            return (), ()
        if delta is None or delta.after is not offered:
            return None
        if how == "all" and what is delta.before:
            return delta.changed, () if keep else delta.gone
        if how == "kept" and what is delta:
            return (), () if keep else delta.gone
        return None


@dataclass(eq=False)  # one per stream, compared by identity
class SotwSession:
    node_id: str
    region: str
    sent: dict[str, str] = field(default_factory=dict)  # type -> version_info last sent
    names: dict[str, set[str]] = field(default_factory=dict)
    unanswered: set[str] = field(default_factory=set)  # (re)subscribed, owed a response
    replies: Replies = field(init=False)
    # by type, the whole set last sent (a keep push's merge included): what Envoy holds
    _last: dict[str, Mapping[str, Resource]] = field(default_factory=dict)
    # name -> version of the whole set last sent, by type
    _held: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replies = Replies(self.node_id)

    @property
    def opened(self) -> set[str]:
        return set(self.names)

    def new_names(self, type_url: str, offered: Mapping[str, Resource],
                  delta: Delta | None = None) -> list[str]:
        """The names of ``offered`` not in the last set this Envoy was sent (sorted)."""
        held = self._held.get(type_url, {})
        return sorted(n for n in offered if n not in held)

    def held_versions(self, type_url: str) -> Mapping[str, str]:
        """Name -> version of what this Envoy was last sent of ``type_url``."""
        return self._held.get(type_url, {})

    def held_beyond(self, type_url: str, offered: Mapping[str, Resource]) -> bool:
        """This Envoy was sent names ``offered`` lacks (right after a ``keep`` push of
        ``offered``, which holds all of it)."""
        return len(self._held.get(type_url, {})) > len(offered)

    def receive(self, req: discovery_pb2.DiscoveryRequest) -> None:
        t = req.type_url
        if req.response_nonce:
            self.replies.record(t, req.response_nonce,
                                req.error_detail if req.HasField("error_detail") else None)
        names = set(req.resource_names) - {"*"}
        if t not in self.names or names != self.names[t]:
            self.names[t] = names
            self.unanswered.add(t)

    def push(self, type_url: str, offered: Mapping[str, Resource], system_version: str,
             delta: Delta | None = None, keep: bool = False
             ) -> discovery_pb2.DiscoveryResponse | None:
        """``keep``: the whole set is what was last sent plus ``offered`` (make before
        break: Envoy removes what a response leaves out, so what it holds stays in it, in
        the version it holds unless ``offered`` changes it); ``delta`` is not used: every
        response carries the whole set.

        Not what was last pushed whole plus ``offered``, as before: when a newer compile
        came while the break waited for the route's ACK, its make step dropped the clusters
        the route Envoy ran named, and sent clusters changed in place back in their older
        version (``tests/unit/test_xds_push_order_sotw.py``)."""
        if type_url not in self.names:
            return None
        if keep:
            offered = {**self._last.get(type_url, {}), **offered}
        self._last[type_url] = offered
        want = _wanted(type_url, self.names[type_url], offered)
        version = hashlib.sha256("".join(f"{n}={r.version};" for n, r in sorted(want.items()))
                                 .encode()).hexdigest()[:16]
        if version == self.sent.get(type_url) and type_url not in self.unanswered:
            return None
        self.unanswered.discard(type_url)
        self.sent[type_url] = version
        self._held[type_url] = {n: r.version for n, r in want.items()}
        return discovery_pb2.DiscoveryResponse(
            type_url=type_url, version_info=version, nonce=self.replies.issue(type_url),
            resources=[_pack(r) for _, r in sorted(want.items())])
