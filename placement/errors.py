"""Switchyard's one exception tree. Each error names the gRPC status it becomes.

::

    SwitchyardError                      (grpc_code)
    ├── ConfigError                      FAILED_PRECONDITION  bad or missing config
    ├── InvalidHint                      INVALID_ARGUMENT     a malformed x-… metadata value
    ├── InvalidRequest                   INVALID_ARGUMENT     request bytes that do not parse
    ├── UnknownModel                     NOT_FOUND            no logical model of that name
    ├── MessageTooLarge                  RESOURCE_EXHAUSTED   over the configured size limit
    ├── NothingFeasible                  RESOURCE_EXHAUSTED   fail-fast, nothing meets the call
    ├── RetryBudgetExhausted             RESOURCE_EXHAUSTED   too many retries fleet-wide right now
    ├── CostCapReached                   RESOURCE_EXHAUSTED   a stream's next response would take
    │                                                         it over the caller's x-max-cost-usd
    ├── NoHealthyDeployment              UNAVAILABLE          nothing healthy is allowed to serve
    ├── PolicyUnsatisfiable              FAILED_PRECONDITION  no deployment, healthy or not, meets
    │                                                         the call's quality/cost/regions
    ├── BackendFailed                    (the backend's code) the last attempt's own status
    ├── DeadlineTooShort                 DEADLINE_EXCEEDED    the caller's deadline leaves no time
    │                                                         to start an attempt
    ├── NotRegistered                    NOT_FOUND            an unknown backend id
    └── PermissionDenied                 PERMISSION_DENIED    admin call without the role

``placement/`` is pure, so codes are status *names*; ``services/`` maps them to
``grpc.StatusCode`` in one interceptor.
"""

from __future__ import annotations


class SwitchyardError(Exception):
    """Base class; ``grpc_code`` is the name of a ``grpc.StatusCode`` member."""

    grpc_code = "INTERNAL"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class ConfigError(SwitchyardError):
    grpc_code = "FAILED_PRECONDITION"


class InvalidHint(SwitchyardError):
    """A routing hint in metadata has a bad value; the message names the header."""

    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, header: str, value: str, why: str) -> None:
        super().__init__(f"metadata {header}={value!r}: {why}")
        self.header = header


class InvalidRequest(SwitchyardError):
    grpc_code = "INVALID_ARGUMENT"


class UnknownModel(SwitchyardError):
    grpc_code = "NOT_FOUND"


class NotRegistered(SwitchyardError):
    grpc_code = "NOT_FOUND"


class MessageTooLarge(SwitchyardError):
    grpc_code = "RESOURCE_EXHAUSTED"


class NothingFeasible(SwitchyardError):
    """No deployment meets the call; carries the best latency on offer and what removed what."""

    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, best_latency_ms: float | None,
                 removed: dict[str, str], retry_after_s: float | None = 1.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.best_latency_ms = best_latency_ms
        self.removed = removed


class RetryBudgetExhausted(SwitchyardError):
    grpc_code = "RESOURCE_EXHAUSTED"


class NoHealthyDeployment(SwitchyardError):
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, *, removed: dict[str, str] | None = None) -> None:
        super().__init__(message, retry_after_s=1.0)
        self.removed = removed or {}


class DeadlineTooShort(SwitchyardError):
    """Less of the caller's own deadline is left than an attempt may start with
    (``attempts.MIN_REMAINING_S``; the one rule is ``CallAttempts.check_time_left``, asked by
    unary calls, streams and hedges alike): the call stops at the edge, nothing is forwarded."""

    grpc_code = "DEADLINE_EXCEEDED"


class CostCapReached(SwitchyardError):
    """A stream's cost so far, with the response that just arrived, is over the caller's
    ``x-max-cost-usd``: that response and the rest are not sent (the ones before were)."""

    grpc_code = "RESOURCE_EXHAUSTED"


class PolicyUnsatisfiable(SwitchyardError):
    """The call's own policy (quality floor, cost cap, regions) excludes every deployment of
    the model, healthy or not: no retry can help, so there is no retry hint. Carries what the
    table offers, so the caller can relax the policy."""

    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, best_quality: float, lowest_cost_usd: float,
                 regions: tuple[str, ...], removed: dict[str, str]) -> None:
        super().__init__(message)
        self.best_quality = best_quality
        self.lowest_cost_usd = lowest_cost_usd
        self.regions = regions
        self.removed = removed


class BackendFailed(SwitchyardError):
    """The last attempt failed with the backend's own status; ``grpc_code`` is set per instance."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.grpc_code = code


class PermissionDenied(SwitchyardError):
    grpc_code = "PERMISSION_DENIED"
