"""Who may speak for a backend id and for an edge id on placement (hostile peers).

**Backends.** A backend id is held by its registrant: the endpoint it registered and, under
``[security]`` mTLS, the identities of the client certificate that registered it. While the
registrant's lease lasts — it registered, or placement used a telemetry report for the
backend, within ``lease_s`` (``placement.stale_after_s``, the age at which its rows go
stale) — a registration naming the id with another endpoint is ``ALREADY_EXISTS``, and one
from a certificate sharing none of the registrant's identities is ``PERMISSION_DENIED``;
each names the holder and what to do (deregister the id first, or wait for the lease). The
registrant itself (same endpoint, an identity in common) re-registers at any time: an agent
restart, its reconnect after a placement restart, a drill. A backend placement has from
elsewhere (preregistered from the config, restored from the run dir or a peer, the capacity
loop's, a discovery's) is held by its endpoint while its telemetry is fresh. When a lease
has lapsed, the next registrant takes the id over, and the takeover is logged.

**Lease tokens** (plaintext too). An endpoint is no secret: any process that can reach
placement can name it. So a registrant may also hold its id by a secret of its own, as
Consul's sessions do: a ``RegisterBackend`` carrying gRPC metadata ``LEASE_KEY`` (16..256
characters; the agent sends a random one per process, the same to every replica) binds the
id to that token. While the lease lasts, a ``DeregisterBackend`` of the id, a registration
of it and its telemetry must carry the same token: a registration or deregistration without
it is ``PERMISSION_DENIED``, a telemetry report from a stream without it is ignored and
counted as another agent's (``ownership.py``). The registrant re-registers with its token
at any time (its reconnect, a placement restart: placement keeps no token, so after a
restart the first registrant of an id holds it again, as without tokens). A registrant
restarted without deregistering has a new token: it is refused until the old lease lapses
(``lease_s``: no registration and no telemetry for that long), as Consul's lock-delay. A
registrant that sends no token (an older agent, or one of an id held by none) is held as
before: by endpoint and certificate. Placement keeps a SHA-256 of each token, compared in
constant time.

Without tokens, in plaintext, the endpoint rule stops a second agent that names a backend
id already in use (a copied config, two agents on one node), not a process that names the
same endpoint or deregisters the backend first (README, "Security and tenants").

**Edges.** An edge id is bound to the edge region of its first ``ReportObservations`` until
it has sent none for ``OBSERVATION_TTL_S`` (when what it taught placement expires); a report
naming another region under that id is ``ALREADY_EXISTS``. Certificates are not part of an
edge's binding: nothing maps an identity to an edge id (``edge_identities`` is one role), and
an Envoy's report reaches another shard under the forwarding replica's certificate
(``services/xds/federation.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass

import structlog

from placement.errors import InvalidRequest, PermissionDenied, SwitchyardError
from placement.fleet import OBSERVATION_TTL_S, BackendState

log = structlog.get_logger("switchyard.placement")


class AlreadyHeld(SwitchyardError):
    """An id another live peer holds (a backend's registrant, an edge id's region)."""

    grpc_code = "ALREADY_EXISTS"


LEASE_KEY = "x-switchyard-lease"  # gRPC metadata: a registrant's lease token
LEASE_MIN, LEASE_MAX = 16, 256  # characters of a token


@dataclass(slots=True)
class Registrant:
    endpoint: str
    identities: tuple[str, ...]  # () in plaintext
    peer: str  # the address it registered from, for people
    at: float  # its last registration
    token: bytes = b""  # SHA-256 of its lease token; b"" when it sent none


def lease_digest(token: str) -> bytes:
    """The digest placement keeps of a lease token (b"" for none); a token of the wrong
    length is INVALID_ARGUMENT naming the bounds."""
    if not token:
        return b""
    if not LEASE_MIN <= len(token) <= LEASE_MAX:
        raise InvalidRequest(f"metadata {LEASE_KEY} has {len(token)} characters; a lease "
                             f"token has {LEASE_MIN}..{LEASE_MAX}")
    return hashlib.sha256(token.encode()).digest()


def _who(r: Registrant | None, endpoint: str) -> str:
    if r is None:
        return f"the backend at {endpoint!r} (registered without RegisterBackend)"
    ids = f" as {', '.join(r.identities)}" if r.identities else ""
    return f"the agent at {r.peer or 'an unknown peer'}{ids} (endpoint {r.endpoint!r})"


class Registrants:
    """Each backend id's registrant and its lease (see the module docstring)."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._by_id: dict[str, Registrant] = {}

    def _silent(self, r: Registrant | None, held: BackendState | None, now: float) -> float:
        beats = [t for t in (r.at if r else None, held.last_at if held else None)
                 if t is not None]
        return now - max(beats) if beats else math.inf

    def _check_token(self, backend_id: str, r: Registrant | None, token: bytes,
                     silent: float, what: str) -> None:
        if (r is not None and r.token and silent <= self.lease_s
                and not hmac.compare_digest(r.token, token)):
            raise PermissionDenied(
                f"backend {backend_id!r} is held under a lease token by {_who(r, r.endpoint)}, "
                f"heard {silent:.1f} s ago; {what} {'with another' if token else 'without'} "
                f"token (metadata {LEASE_KEY}) is refused: only its registrant may, or anyone "
                f"once it has been silent {self.lease_s:g} s (placement.stale_after_s)")

    def admit(self, backend_id: str, endpoint: str, identities: tuple[str, ...], peer: str,
              now: float, held: BackendState | None, token: bytes = b"") -> None:
        """Bind ``backend_id`` to this registration, or raise when another holds it."""
        r = self._by_id.get(backend_id)
        if held is not None:
            silent = self._silent(r, held, now)
            beats = math.isfinite(silent)
            self._check_token(backend_id, r, token, silent, "a registration")
            holder_endpoint = r.endpoint if r else held.backend.endpoint
            stranger = r is not None and bool(r.identities) and not set(r.identities) & set(
                identities)
            moved = endpoint != holder_endpoint
            if silent <= self.lease_s and (stranger or moved):
                self._refuse(backend_id, endpoint, identities, r, holder_endpoint, silent,
                             stranger)
            if (stranger or moved) and beats:
                log.warning("backend_registrant_changed", backend=backend_id,
                            old=_who(r, holder_endpoint), new_endpoint=endpoint,
                            new_identity=list(identities), old_silent_s=round(silent, 1))
        self._by_id[backend_id] = Registrant(endpoint, identities, peer, now, token)

    def may_deregister(self, backend_id: str, now: float, held: BackendState | None,
                       token: bytes) -> None:
        """Raise unless this deregistration may remove ``backend_id`` (its lease token, when
        its registrant holds it by one and the lease lasts)."""
        r = self._by_id.get(backend_id)
        self._check_token(backend_id, r, token, self._silent(r, held, now), "a deregistration")

    def may_report(self, backend_id: str, token: bytes) -> bool:
        """Whether a telemetry stream carrying ``token`` may report ``backend_id``: its
        registrant's token when it holds the id by one (its lease renews with each report)."""
        r = self._by_id.get(backend_id)
        return r is None or not r.token or hmac.compare_digest(r.token, token)

    def _refuse(self, backend_id: str, endpoint: str, identities: tuple[str, ...],
                r: Registrant | None, holder_endpoint: str, silent: float,
                stranger: bool) -> None:
        holder = _who(r, holder_endpoint)
        wait = (f"deregister {backend_id!r} first (DeregisterBackend), or wait until its "
                f"holder has been silent {self.lease_s:g} s (placement.stale_after_s: no "
                "registration and no telemetry); a second agent needs a backend id of its own")
        if stranger:
            raise PermissionDenied(
                f"backend {backend_id!r} is held by {holder}, heard {silent:.1f} s ago; a "
                f"registration by {', '.join(identities) or 'an unauthenticated peer'} is "
                f"refused: {wait}")
        raise AlreadyHeld(
            f"backend {backend_id!r} is held by {holder}, heard {silent:.1f} s ago; a "
            f"registration naming endpoint {endpoint[:300]!r} is refused: {wait}")

    def forget(self, backend_id: str) -> None:
        self._by_id.pop(backend_id, None)

    def holder(self, backend_id: str) -> Registrant | None:
        return self._by_id.get(backend_id)


class EdgeRegions:
    """Each edge id's region, from its first report, until it is silent ``ttl_s``."""

    SWEEP_FLOOR = 1024  # ids kept before the first sweep of lapsed ones

    def __init__(self, ttl_s: float = OBSERVATION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._by_id: dict[str, tuple[str, float]] = {}
        self._sweep_at = self.SWEEP_FLOOR

    def admit(self, edge_id: str, region: str, now: float) -> None:
        """Bind ``edge_id`` to ``region`` (or renew it), or raise when it is bound elsewhere."""
        held = self._by_id.get(edge_id)
        if held is not None and held[0] != region:
            silent = now - held[1]
            if silent <= self.ttl_s:
                raise AlreadyHeld(
                    f"edge_id {edge_id!r} reports for edge region {held[0]!r} (last "
                    f"{silent:.1f} s ago); a report naming edge_region {region!r} under it is "
                    f"refused: give each edge its own edge_id, or move this one after "
                    f"{self.ttl_s:g} s without reports (when what it taught expires)")
            log.warning("edge_region_changed", edge=edge_id, old=held[0], new=region,
                        old_silent_s=round(silent, 1))
        self._by_id[edge_id] = (region, now)
        if len(self._by_id) > self._sweep_at:
            self._by_id = {k: v for k, v in self._by_id.items() if now - v[1] <= self.ttl_s}
            self._sweep_at = max(self.SWEEP_FLOOR, 2 * len(self._by_id))

    def region(self, edge_id: str) -> str | None:
        held = self._by_id.get(edge_id)
        return held[0] if held else None
