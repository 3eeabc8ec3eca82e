"""The daemon's exception tree; each class carries the protocol error code.

    ClaifdError (internal)
    ├── BadRequest (bad_request)
    ├── NotFound (not_found)
    ├── ShuttingDown (shutting_down)
    ├── StorageError (storage_error)
    ├── NotConfigured (not_configured)
    ├── UpstreamError (upstream_error)
    │   ├── RateLimited (rate_limited)
    │   └── UpstreamTimeout (timeout)
    └── StartupError         not sent to clients: the daemon cannot start

Handlers raise these; `error_info` turns any exception into what the
client is told (the one place that does, for replies and batch items alike):
a `ClaifdError` with its code, message, retry_after and details; a
`TimeoutError` (the request's deadline) as `timeout`; anything else as
`internal`, whose traceback the caller logs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from claif_client.protocol import Error, ErrorCode, ErrorInfo

__all__ = [
    "ClaifdError",
    "BadRequest",
    "NotFound",
    "ShuttingDown",
    "StorageError",
    "NotConfigured",
    "UpstreamError",
    "RateLimited",
    "UpstreamTimeout",
    "CircuitOpen",
    "BudgetExceeded",
    "StartupError",
    "error_info",
    "error_frame",
]


class ClaifdError(Exception):
    code: ClassVar[str] = ErrorCode.INTERNAL

    def __init__(
        self, message: str, *, retry_after: float | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details = details


class BadRequest(ClaifdError):
    code = ErrorCode.BAD_REQUEST


class NotFound(ClaifdError):
    code = ErrorCode.NOT_FOUND


class ShuttingDown(ClaifdError):
    code = ErrorCode.SHUTTING_DOWN


class StorageError(ClaifdError):
    """The session store refused a write; nothing was acknowledged."""

    code = ErrorCode.STORAGE_ERROR


class BudgetExceeded(ClaifdError):
    """A spending limit (budgets.*) is reached and budgets.action is refuse."""

    code = ErrorCode.BUDGET_EXCEEDED


class NotConfigured(ClaifdError):
    """The request needs configuration that is missing (an API key...)."""

    code = ErrorCode.NOT_CONFIGURED


class UpstreamError(ClaifdError):
    code = ErrorCode.UPSTREAM_ERROR


class RateLimited(UpstreamError):
    code = ErrorCode.RATE_LIMITED


class UpstreamTimeout(UpstreamError):
    code = ErrorCode.TIMEOUT


class TlsError(UpstreamError):
    """A certificate refused, the upstream's or ours: no retry fixes it."""

    code = ErrorCode.TLS_ERROR


class CircuitOpen(UpstreamError):
    """The provider failed too often in a row: calls fail at once until its probe succeeds."""

    code = ErrorCode.CIRCUIT_OPEN


class StartupError(Exception):
    """The daemon cannot start (another daemon runs, the socket is unusable...)."""


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, ClaifdError):
        return ErrorInfo(exc.code, exc.message, exc.retry_after, exc.details)
    if isinstance(exc, TimeoutError):
        return ErrorInfo(ErrorCode.TIMEOUT, "request timed out in the daemon")
    return ErrorInfo(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")


def error_frame(rid: int, exc: BaseException) -> Error:
    info = error_info(exc)
    return Error(id=rid, code=info.code, message=info.message, retry_after=info.retry_after, details=info.details)
