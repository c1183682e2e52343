"""Settings for the Consul discovery path: the ``[consul]`` section of the mesh file.

Hooked into ``MeshConfig`` as ``consul: ConsulSettings = ConsulSettings()``; read once with
the rest of the file and passed in. Nothing here reads the environment: the ACL token may be
given inline or as ``token_file`` (a mounted Kubernetes Secret), never from ``CONSUL_HTTP_TOKEN``.
"""

from __future__ import annotations

import pathlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.discovery.base import HealthCheck


class ConsulTlsSettings(BaseModel):
    """TLS towards the Consul agent's HTTPS port: CA bundle and an optional client certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _pair(self) -> ConsulTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(f"consul.tls.cert_file {self.cert_file!r} and consul.tls.key_file "
                             f"{self.key_file!r} must be given together")
        return self


class ConsulSettings(BaseModel):
    """Where the local Consul agent is and how Switchyard uses its catalog and KV.

    ``address`` is the agent's HTTP(S) API, ``scheme://host:port``. Backends register under
    ``backend_service``, placement replicas under ``placement_service``; prices and tenant
    policies live in KV under ``kv_prefix`` (``<prefix>/prices/<name>``,
    ``<prefix>/tenants/<tenant>``). Blocking queries wait ``wait_s`` (jittered by
    ``wait_jitter``); a token bucket (``rate_burst`` deliveries, one more every
    ``rate_refill_s``) stops a churning index from becoming a busy loop; errors back off from
    ``retry_min_s`` to ``retry_max_s``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = "http://127.0.0.1:8500"
    token: str | None = None
    token_file: str | None = None
    datacenter: str | None = None
    tls: ConsulTlsSettings = ConsulTlsSettings()
    backend_service: str = "switchyard-backend"
    placement_service: str = "switchyard-placement"
    kv_prefix: str = "switchyard"
    only_passing: bool = True
    wait_s: float = Field(default=30.0, gt=0, le=600)
    wait_jitter: float = Field(default=0.1, ge=0, lt=1)
    rate_burst: int = Field(default=3, ge=1)
    rate_refill_s: float = Field(default=1.0, ge=0)
    retry_min_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    check_interval_s: float = Field(default=2.0, gt=0)
    check_timeout_s: float = Field(default=1.0, gt=0)
    deregister_critical_after_s: float = Field(default=300.0, ge=60)

    @model_validator(mode="after")
    def _checks(self) -> ConsulSettings:
        scheme, sep, rest = self.address.partition("://")
        if not sep or scheme not in ("http", "https") or not rest:
            raise ValueError(f"consul.address {self.address!r} must look like "
                             "http://host:port or https://host:port")
        if self.token is not None and self.token_file is not None:
            raise ValueError("consul.token and consul.token_file are exclusive; give one")
        if self.retry_max_s < self.retry_min_s:
            raise ValueError(f"consul.retry_max_s {self.retry_max_s} is below "
                             f"consul.retry_min_s {self.retry_min_s}")
        if self.kv_prefix.startswith("/"):
            raise ValueError(f"consul.kv_prefix {self.kv_prefix!r} must not start with '/'")
        return self

    def health_check(self, kind: Literal["grpc", "http", "tcp"], target: str) -> HealthCheck:
        """The catalog's check of a service this process registers (a backend, a placement
        replica), with this section's ``check_interval_s``, ``check_timeout_s`` and
        ``deregister_critical_after_s``."""
        return HealthCheck(kind, target, interval_s=self.check_interval_s,
                           timeout_s=self.check_timeout_s,
                           deregister_critical_after_s=self.deregister_critical_after_s)

    @property
    def scheme(self) -> Literal["http", "https"]:
        return "https" if self.address.startswith("https://") else "http"

    @property
    def host_port(self) -> tuple[str, int]:
        """Host and port of ``address`` (the scheme's default port when none is given)."""
        rest = self.address.partition("://")[2].rstrip("/")
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            return rest.strip("[]"), 8501 if self.scheme == "https" else 8500
        return host.strip("[]"), int(port)

    def resolved_token(self) -> str | None:
        """The ACL token: inline, or the stripped contents of ``token_file``."""
        if self.token_file is not None:
            return pathlib.Path(self.token_file).read_text().strip() or None
        return self.token
