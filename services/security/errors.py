"""Security errors, in Switchyard's one tree (``placement.errors.SwitchyardError``)::

    SwitchyardError
    ├── PermissionDenied            PERMISSION_DENIED   (placement.errors) authenticated, not allowed
    ├── Unauthenticated             UNAUTHENTICATED     no credential, or one nobody issued
    └── QuotaExceeded               RESOURCE_EXHAUSTED  tenant rate or concurrency quota; retry hint
"""

from __future__ import annotations

from placement.errors import PermissionDenied, SwitchyardError

__all__ = ["PermissionDenied", "QuotaExceeded", "Unauthenticated"]


class Unauthenticated(SwitchyardError):
    grpc_code = "UNAUTHENTICATED"


class QuotaExceeded(SwitchyardError):
    """A tenant is over its rate or concurrency quota; ``retry_after_s`` says when to retry."""

    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, tenant: str, quota: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.tenant = tenant
        self.quota = quota
