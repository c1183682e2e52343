"""Tenants at the edge: who is calling (from a credential) and what the call may use.

A tenant is identified by a bearer token in ``authorization`` metadata (compared by its
sha256) or by the SAN of the client certificate — never by ``x-tenant``, which may only
repeat the credential's tenant (otherwise PERMISSION_DENIED). Per call the edge does::

    admission = gate.admit(metadata, context.auth_context)   # raises a SwitchyardError
    hints = admission.narrow(hints)                          # regions ∩, clouds, cost cap
    ...
    admission.release()                                      # frees the concurrency slot

``narrow`` turns the tenant's allowed regions and clouds into ``Hints.allowed_regions``
(intersected with the caller's own ``x-allowed-regions``), which the pipeline's residency
filter enforces as a hard filter: on every retry and in the fallback. Rate (token bucket)
and concurrency quotas raise ``QuotaExceeded`` (RESOURCE_EXHAUSTED, ``retry-after-ms``).
``reload(settings)`` swaps the policy tables in one assignment; quota state survives.
The per-call cost is a metadata scan, one sha256 and a few dict lookups (``--bench``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from placement.errors import InvalidRequest, MessageTooLarge, PermissionDenied
from placement.model import Hints
from services.security.errors import QuotaExceeded, Unauthenticated
from services.security.identity import AuthContext, identities
from services.security.settings import SecuritySettings, TenantSettings, tenant_regions

CONCURRENCY_RETRY_S = 0.05
# One credential per call. Sent twice, the last one (the Python edge) or neither (Envoy joins a
# repeated authorization with ',' into one value, an unknown token) was read, so the two
# engines named different tenants; a bearer token has no ',' (RFC 6750's b64token).
TWO_CREDENTIALS = ("authorization carries more than one credential (sent twice, or joined "
                   "with ','); send one: authorization: Bearer <token>")
# As a hint sent as -bin (services/edge/hints.py): skipped, the call was served as no tenant,
# outside the tenant's residency and cost cap, without a word.
BINARY_CREDENTIAL = ("a credential sent as authorization-bin is not read; send it as text: "
                     "authorization: Bearer <token>")
# ``require_tenant``: a caller with no credential, on any RPC but ``OPEN_RPCS``.
TENANTS_ONLY = ("this edge serves tenants only; send authorization: Bearer <token> or a client "
                "certificate")
Metadata = Iterable[tuple[str, str | bytes]] | None
# HPACK's size of one header entry beyond its name and value (RFC 7541 4.1), as gRPC's
# servers and Envoy's listener (native/rules.c sy_metadata_refusal) count a header list.
ENTRY_OVERHEAD = 32
AuthSource = AuthContext | Callable[[], AuthContext] | None
# The one rule for which RPCs a caller without a credential may call where tenants are
# required: the probes only (Triton's liveness and readiness; ``grpc.health.v1`` and
# reflection are other services, never gated). Every other RPC of an edge (the control RPCs
# of ``inference.GRPCInferenceService``, ``EdgeAdmin``) passes ``TenantGate.admit`` with
# ``quota=False``: its credential is checked as a call's, its tenant's quotas are not taken.
OPEN_RPCS = frozenset({"ServerLive", "ServerReady"})


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    name: str
    regions: frozenset[str]  # empty = every region
    max_cost_usd: float  # 0 = no cap
    rate_per_s: float  # 0 = unlimited
    burst: float
    max_concurrency: int  # 0 = unlimited

    @classmethod
    def of(cls, t: TenantSettings, region_clouds: Mapping[str, str]) -> TenantPolicy:
        return cls(t.name, tenant_regions(t, region_clouds), t.max_cost_usd, t.rate_limit_per_s,
                   float(t.burst or max(1.0, t.rate_limit_per_s)), t.max_concurrency)


class _Quota:
    """One tenant's token bucket and in-flight count (kept across reloads)."""

    __slots__ = ("in_flight", "last", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens, self.last, self.in_flight = tokens, now, 0


class Admission:
    """An admitted call: narrows its hints and holds its concurrency slot until released."""

    __slots__ = ("_quota", "policy", "tenant")

    def __init__(self, tenant: str, policy: TenantPolicy | None, quota: _Quota | None) -> None:
        self.tenant, self.policy, self._quota = tenant, policy, quota

    def narrow(self, hints: Hints) -> Hints:
        """The call's hints within the tenant's policy; PERMISSION_DENIED if nothing is left."""
        p = self.policy
        if p is None:
            return hints if hints.tenant == self.tenant else Hints(
                hints.slo_ms, hints.min_quality, hints.max_cost_usd, hints.allowed_regions,
                hints.fail_fast, self.tenant)
        regions = hints.allowed_regions
        if p.regions:
            if regions:
                inside = regions & p.regions
                if not inside:
                    raise PermissionDenied(
                        f"x-allowed-regions {sorted(regions)} lie outside tenant {p.name!r}'s "
                        f"allowed regions {sorted(p.regions)}")
                regions = inside
            else:
                regions = p.regions
        cost = hints.max_cost_usd
        if p.max_cost_usd and cost > p.max_cost_usd:  # hints: inf = no cap, 0 is a cap
            cost = p.max_cost_usd
        return Hints(hints.slo_ms, hints.min_quality, cost, regions, hints.fail_fast, p.name)

    def release(self) -> None:
        q, self._quota = self._quota, None
        if q is not None:
            q.in_flight -= 1


ANONYMOUS = Admission("", None, None)


def _wire_length(value: str | bytes) -> int:
    """A value's length as sent: a -bin value's base64 (unpadded, as gRPC sends it)."""
    return (len(value) * 4 + 2) // 3 if isinstance(value, bytes) else len(value)


def _text(token: str | bytes) -> str:
    return token.decode("latin-1") if isinstance(token, bytes) else token


@dataclass(frozen=True)
class _Tables:
    by_digest: dict[str, TenantPolicy]
    by_san: dict[str, TenantPolicy]
    require_tenant: bool
    max_metadata_count: int
    max_metadata_bytes: int
    enabled: bool


class TenantGate:
    def __init__(self, sec: SecuritySettings, region_clouds: Mapping[str, str],
                 clock: Callable[[], float] = time.monotonic,
                 uncounted: Mapping[str, int] | None = None) -> None:
        """``uncounted``: metadata names never counted against ``max_metadata_count`` (an
        Envoy edge's slow path: what its Envoy adds), beside ``user-agent`` and ``grpc-*``,
        each with the bytes of it ``max_metadata_bytes`` does not count either (what Envoy
        writes there; anything past that is the caller's)."""
        self.region_clouds = dict(region_clouds)
        self.uncounted = dict(uncounted or {})
        self.clock = clock
        self._quotas: dict[str, _Quota] = {}
        self._tables = self._build(sec)

    def _build(self, sec: SecuritySettings) -> _Tables:
        by_digest: dict[str, TenantPolicy] = {}
        by_san: dict[str, TenantPolicy] = {}
        for t in sec.tenants:
            p = TenantPolicy.of(t, self.region_clouds)
            if t.digest:
                by_digest[t.digest] = p
            if t.client_san:
                by_san[t.client_san] = p
        return _Tables(by_digest, by_san, sec.require_tenant, sec.limits.max_metadata_count,
                       sec.limits.max_metadata_bytes, bool(sec.tenants) or sec.require_tenant)

    def reload(self, sec: SecuritySettings) -> None:
        """New policies take effect for the next call; in-flight calls keep their slots."""
        self._tables = self._build(sec)

    @property
    def enabled(self) -> bool:
        return self._tables.enabled

    def admit(self, metadata: Metadata, auth: AuthSource = None, *, quota: bool = True
              ) -> Admission:
        """Identify the call's tenant and take its quotas (``quota``: a control RPC takes
        none), or raise a SwitchyardError."""
        tables = self._tables
        token = claimed = None
        n = tokens = size = 0
        binary = False
        for key, value in metadata or ():
            entry = len(key) + _wire_length(value) + ENTRY_OVERHEAD
            allowed = self.uncounted.get(key)
            if allowed is not None:  # set by Envoy: no entry of the caller's, nor its bytes
                size += max(0, entry - allowed)
                continue
            size += entry
            if key == "user-agent" or key.startswith("grpc-"):
                continue  # set by gRPC itself, not custom metadata: not counted
            n += 1
            if key == "authorization":
                token = value
                tokens += 1
            elif key == "x-tenant":
                claimed = value
            elif key == "authorization-bin":
                binary = True
        if size > tables.max_metadata_bytes:
            raise MessageTooLarge(f"metadata of {size} bytes is larger than max_metadata_bytes "
                                  f"({size} vs. {tables.max_metadata_bytes})")
        if n > tables.max_metadata_count:
            raise InvalidRequest(f"call carries {n} metadata entries (limit "
                                 f"{tables.max_metadata_count})")
        if not tables.enabled:
            return ANONYMOUS if claimed is None else Admission(str(claimed), None, None)
        if binary:
            raise Unauthenticated(BINARY_CREDENTIAL)
        if tokens > 1 or (token is not None and "," in _text(token)):
            raise Unauthenticated(TWO_CREDENTIALS)
        policy = self._identify(tables, token, auth)
        if policy is None:
            if claimed is not None:
                raise Unauthenticated(f"x-tenant {claimed!r} is not a credential; send "
                                      "authorization: Bearer <token> or a client certificate")
            if tables.require_tenant:
                raise Unauthenticated(TENANTS_ONLY)
            return ANONYMOUS
        if claimed is not None and claimed != policy.name:
            raise PermissionDenied(f"x-tenant {claimed!r} does not match the credential's "
                                   f"tenant {policy.name!r}")
        return Admission(policy.name, policy, self._take(policy) if quota else None)

    def _identify(self, tables: _Tables, token: str | bytes | None, auth: AuthSource
                  ) -> TenantPolicy | None:
        if token is not None:
            raw = _text(token)
            scheme, _, secret = raw.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
            policy = tables.by_digest.get(
                hashlib.sha256(secret.strip().encode("utf-8", "surrogateescape")).hexdigest())
            if policy is None:
                raise Unauthenticated("unknown bearer token")
            return policy
        if auth is None or not tables.by_san:
            return None
        for name in identities(auth() if callable(auth) else auth):
            policy = tables.by_san.get(name)
            if policy is not None:
                return policy
        return None

    def _take(self, p: TenantPolicy) -> _Quota | None:
        if not p.rate_per_s and not p.max_concurrency:
            return None
        now = self.clock()
        q = self._quotas.get(p.name)
        if q is None:
            q = self._quotas[p.name] = _Quota(p.burst, now)
        if p.rate_per_s:
            q.tokens = min(p.burst, q.tokens + (now - q.last) * p.rate_per_s)
            q.last = now
            if q.tokens < 1.0:
                raise QuotaExceeded(
                    f"tenant {p.name!r} is over its rate limit ({p.rate_per_s:g}/s, burst "
                    f"{p.burst:g})", tenant=p.name, quota="rate",
                    retry_after_s=(1.0 - q.tokens) / p.rate_per_s)
        if p.max_concurrency and q.in_flight >= p.max_concurrency:
            raise QuotaExceeded(f"tenant {p.name!r} has {q.in_flight} calls in flight (limit "
                                f"{p.max_concurrency})", tenant=p.name, quota="concurrency",
                                retry_after_s=CONCURRENCY_RETRY_S)
        if p.rate_per_s:
            q.tokens -= 1.0
        if not p.max_concurrency:
            return None
        q.in_flight += 1
        return q


def _bench(n: int = 200_000) -> None:
    """µs per admit + narrow + release for each credential path (not a test)."""
    regions = {f"r-{i}": ("aws" if i % 2 else "gcp") for i in range(12)}
    tenants = [TenantSettings(name=f"t{i}", token=f"tok-{i}", client_san=f"t{i}.tenant.local",
                              allowed_regions=["r-1", "r-2", "r-3"], max_cost_usd=0.01,
                              rate_limit_per_s=1e9, burst=10**9, max_concurrency=10**6)
               for i in range(1000)]
    sec = SecuritySettings(plaintext=True, tenants=tenants)
    gate = TenantGate(sec, regions)
    off = TenantGate(SecuritySettings(plaintext=True), regions)
    hints = Hints(slo_ms=100.0, allowed_regions=frozenset({"r-2", "r-5"}))
    base = [("x-slo-ms", "100"), ("x-request-id", "abc"), ("user-agent", "grpc-python")]
    auth = {"x509_subject_alternative_name": [b"t500.tenant.local"]}
    cases = {
        "no tenants configured": (off, base, None),
        "bearer token": (gate, [*base, ("authorization", "Bearer tok-500")], None),
        "token + x-tenant": (gate, [*base, ("authorization", "Bearer tok-500"),
                                    ("x-tenant", "t500")], None),
        "client cert SAN": (gate, base, lambda: auth),
        "no credential (anonymous)": (gate, base, None),
    }
    for label, (g, md, a) in cases.items():
        t0 = time.perf_counter()
        for _ in range(n):
            adm = g.admit(md, a)
            adm.narrow(hints)
            adm.release()
        us = (time.perf_counter() - t0) / n * 1e6
        print(f"{label:<28} {us:6.2f} µs per call (admit + narrow + release, {n} calls)")


if __name__ == "__main__":
    import sys

    if "--bench" in sys.argv:
        _bench()
    else:
        print("usage: python -m services.security.tenants --bench")
