"""The ``[security]`` section of the mesh file: transport, identities, tenants, limits.

::

    [security]
    plaintext = false                  # true = no TLS at all (local development only; loud)
    ca_file = "certs/ca.pem"
    cert_file = "certs/{role}.pem"     # {role}: placement, edge, agent, admin
    key_file = "certs/{role}.key"
    edge_client_certs = true           # clients must present a certificate at the edge
    admin_identities = ["admin.switchyard.local"]
    edge_identities = ["edge.switchyard.local"]

    [[security.agents]]
    identity = "agent.switchyard.local"
    backends = ["east-fast", "west-cheap"]

    [[security.tenants]]
    name = "acme"
    token_sha256 = "9f86d0…"           # sha256(token) hex; or token = "…" (dev only)
    allowed_regions = ["r-east"]
    rate_limit_per_s = 100
    burst = 20
    max_concurrency = 8

Identities are certificate SANs (DNS, URI or IP) or, failing those, the common name.
Cross-references (tenant regions and clouds, agent backends) are checked against the rest
of the mesh by :func:`check_references`, which ``MeshConfig`` calls from its validator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

ROLES = ("placement", "edge", "agent", "admin")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentIdentity(_Strict):
    """A node agent's certificate identity and the backends it may speak for."""

    identity: str
    backends: list[str]


class TenantSettings(_Strict):
    """One tenant: how it proves who it is, and what it may use.

    0 means "no limit" for ``max_cost_usd``, ``rate_limit_per_s`` and ``max_concurrency``;
    empty ``allowed_regions`` / ``allowed_clouds`` mean every region / cloud.
    """

    name: str = Field(min_length=1)
    token: str = ""  # the bearer token itself; prefer token_sha256 outside development
    token_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    client_san: str = ""
    allowed_regions: list[str] = []
    allowed_clouds: list[str] = []
    max_cost_usd: float = Field(default=0.0, ge=0)
    rate_limit_per_s: float = Field(default=0.0, ge=0)
    burst: int = Field(default=0, ge=0)  # 0 = max(1, rate_limit_per_s)
    max_concurrency: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _credential(self) -> TenantSettings:
        if not (self.token or self.token_sha256 or self.client_san):
            raise ValueError(f"tenant {self.name!r} needs a credential: token_sha256, token "
                             "or client_san")
        if self.token and self.token_sha256 and token_digest(self.token) != self.token_sha256:
            raise ValueError(f"tenant {self.name!r}: token and token_sha256 disagree")
        return self

    @property
    def digest(self) -> str:
        """sha256 hex of the tenant's token ('' when it has none)."""
        return self.token_sha256 or (token_digest(self.token) if self.token else "")


class LimitsSettings(_Strict):
    """Hostile-input limits every Switchyard server applies (message size is ``edge``'s)."""

    max_metadata_bytes: int = Field(default=8 * 1024, ge=1024)  # HTTP/2 header list, total
    max_metadata_count: int = Field(default=64, ge=4)  # custom metadata entries per call
    max_concurrent_streams: int = Field(default=256, ge=1)  # per HTTP/2 connection
    idle_connection_timeout_s: float = Field(default=300.0, gt=0)
    max_connection_age_s: float = Field(default=0.0, ge=0)  # 0 = unlimited


class SecuritySettings(_Strict):
    plaintext: bool | None = None
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    edge_client_certs: bool = True
    admin_identities: list[str] = []
    edge_identities: list[str] = []  # empty = any authenticated peer may report observations
    agents: list[AgentIdentity] = []
    tenants: list[TenantSettings] = []
    # Calls with no tenant credential: served unrestricted (False) or UNAUTHENTICATED (True).
    require_tenant: bool = False
    limits: LimitsSettings = LimitsSettings()

    @model_validator(mode="after")
    def _transport(self) -> SecuritySettings:
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file,
                 "key_file": self.key_file}
        if self.plaintext is None:
            if not all(files.values()):
                raise ValueError("security: set plaintext = true (local development only) or "
                                 "give ca_file, cert_file and key_file")
        elif not self.plaintext:
            missing = [k for k, v in files.items() if not v]
            if missing:
                raise ValueError(f"security.plaintext is false but security.{missing[0]} is "
                                 "empty")
        _unique("security.tenants", [t.name for t in self.tenants])
        _unique("security.tenants token", [t.digest for t in self.tenants if t.digest])
        _unique("security.tenants client_san", [t.client_san for t in self.tenants
                                                if t.client_san])
        _unique("security.agents", [a.identity for a in self.agents])
        return self

    @property
    def tls(self) -> bool:
        return not self.plaintext

    def cert_for(self, role: str) -> tuple[str, str]:
        """(cert_file, key_file) for a process role; ``{role}`` in the paths is substituted."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {ROLES}")
        return self.cert_file.replace("{role}", role), self.key_file.replace("{role}", role)



def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_references(sec: SecuritySettings, region_clouds: Mapping[str, str],
                     backend_ids: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the path when security refers to unknown mesh names."""
    clouds = set(region_clouds.values())
    backends = set(backend_ids)
    for i, t in enumerate(sec.tenants):
        for r in t.allowed_regions:
            if r not in region_clouds:
                raise ValueError(f"security.tenants[{i}].allowed_regions {r!r} is not in "
                                 f"regions {sorted(region_clouds)}")
        for c in t.allowed_clouds:
            if c not in clouds:
                raise ValueError(f"security.tenants[{i}].allowed_clouds {c!r} is not a cloud "
                                 f"of any region {sorted(clouds)}")
        if (t.allowed_regions or t.allowed_clouds) and not tenant_regions(t, region_clouds):
            raise ValueError(f"security.tenants[{i}] ({t.name!r}): allowed_regions "
                             f"{t.allowed_regions} and allowed_clouds {t.allowed_clouds} "
                             "leave no region")
    for i, a in enumerate(sec.agents):
        for b in a.backends:
            if b not in backends:
                raise ValueError(f"security.agents[{i}].backends {b!r} is not in backends "
                                 f"{sorted(backends)}")


def tenant_regions(t: TenantSettings, region_clouds: Mapping[str, str]) -> frozenset[str]:
    """The regions a tenant may be served in (empty = unrestricted)."""
    if not t.allowed_regions and not t.allowed_clouds:
        return frozenset()
    regions = set(t.allowed_regions or region_clouds)
    if t.allowed_clouds:
        regions &= {r for r, c in region_clouds.items() if c in t.allowed_clouds}
    return frozenset(regions)


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            raise ValueError(f"{what}[{i}] {n!r} is defined twice")
        seen.add(n)


# What MeshConfig uses when the file has no [security] section (loud at start).
LOCAL_DEFAULT = SecuritySettings(plaintext=True)
