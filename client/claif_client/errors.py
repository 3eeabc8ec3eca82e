"""Exceptions raised by the thin client.

    ClaifError
    ├── DaemonUnavailable      no daemon answers on the socket (CLI exit 3)
    │   └── UntrustedDaemon    the socket is served by another user's process: refused
    ├── ProtocolError          the peer broke the wire protocol, or versions differ
    ├── Timeout                no answer within the client's timeout
    └── RemoteError(code)      the daemon answered a request with an Error frame
        ├── BadRequest         bad_request, unknown_method, too_large, unsupported
        │   └── InvalidRequest a request the client refused before sending (also a TypeError/ValueError)
        ├── NotFound           not_found
        ├── NotConfigured      not_configured (e.g. no API key for the provider)
        ├── UpstreamError      upstream_error
        │   └── RateLimited    rate_limited (see .retry_after)
        ├── UpstreamTimeout    timeout
        ├── Cancelled          cancelled
        ├── ShuttingDown       shutting_down
        ├── StorageError       storage_error (the daemon could not save: nothing was acknowledged)
        ├── Forbidden          forbidden (this user may not use that daemon: server.allowed_uids)
        └── InternalError      internal

`RemoteError.code` is the stable protocol code; switch on it rather than on
the class when a code has no class of its own.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClaifError",
    "DaemonUnavailable",
    "UntrustedDaemon",
    "Forbidden",
    "ProtocolError",
    "Timeout",
    "RemoteError",
    "BadRequest",
    "InvalidRequest",
    "NotFound",
    "NotConfigured",
    "RateLimited",
    "UpstreamError",
    "UpstreamTimeout",
    "Cancelled",
    "ShuttingDown",
    "InternalError",
    "StorageError",
    "remote_error",
]


class ClaifError(Exception):
    """Base class of every error the client raises."""


class DaemonUnavailable(ClaifError):
    pass


class UntrustedDaemon(DaemonUnavailable):
    """The process behind the socket runs as another user: no prompt is sent to it."""


class ProtocolError(ClaifError):
    pass


class Timeout(ClaifError):
    pass


class RemoteError(ClaifError):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(RemoteError):
    pass


class InvalidRequest(BadRequest, TypeError, ValueError):
    """A request refused by the client before anything was sent (the field is
    named in the message). Also a TypeError and a ValueError, as the argument
    errors it replaces were."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_request", message)


class NotFound(RemoteError):
    pass


class NotConfigured(RemoteError):
    pass


class UpstreamError(RemoteError):
    pass


class RateLimited(UpstreamError):
    pass


class UpstreamTimeout(RemoteError):
    pass


class Cancelled(RemoteError):
    pass


class ShuttingDown(RemoteError):
    pass


class InternalError(RemoteError):
    pass


class StorageError(RemoteError):
    pass


class Forbidden(RemoteError):
    pass


_BY_CODE: dict[str, type[RemoteError]] = {
    "forbidden": Forbidden,
    "bad_request": BadRequest,
    "unknown_method": BadRequest,
    "too_large": BadRequest,
    "unsupported": BadRequest,
    "not_found": NotFound,
    "not_configured": NotConfigured,
    "rate_limited": RateLimited,
    "upstream_error": UpstreamError,
    "timeout": UpstreamTimeout,
    "cancelled": Cancelled,
    "shutting_down": ShuttingDown,
    "internal": InternalError,
    "storage_error": StorageError,
}


def remote_error(
    code: str, message: str, retry_after: float | None = None, details: dict[str, Any] | None = None
) -> RemoteError:
    """The exception for an `Error` frame, of the class its code maps to."""
    cls = _BY_CODE.get(code, RemoteError)
    return cls(code, message, retry_after=retry_after, details=details)
