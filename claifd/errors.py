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

Handlers raise these; the server turns them into `Error` frames. Any other
exception becomes `internal` and is logged with its traceback.
"""

from __future__ import annotations

from typing import Any, ClassVar

from claif_client.protocol import ErrorCode

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
    "StartupError",
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


class NotConfigured(ClaifdError):
    """The request needs configuration that is missing (an API key...)."""

    code = ErrorCode.NOT_CONFIGURED


class UpstreamError(ClaifdError):
    code = ErrorCode.UPSTREAM_ERROR


class RateLimited(UpstreamError):
    code = ErrorCode.RATE_LIMITED


class UpstreamTimeout(UpstreamError):
    code = ErrorCode.TIMEOUT


class StartupError(Exception):
    """The daemon cannot start (another daemon runs, the socket is unusable...)."""
