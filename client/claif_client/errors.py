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
        │   ├── RateLimited    rate_limited (see .retry_after)
        │   ├── TlsError       tls_error (a certificate refused either way: never retried)
        │   └── CircuitOpen    circuit_open (the provider failed too often in a row: see .retry_after)
        ├── UpstreamTimeout    timeout
        ├── Cancelled          cancelled
        ├── ShuttingDown       shutting_down
        ├── StorageError       storage_error (the daemon could not save: nothing was acknowledged)
        ├── Forbidden          forbidden (this user may not use that daemon: server.allowed_uids)
        └── InternalError      internal

`RemoteError.code` is the stable protocol code; switch on it rather than on
the class when a code has no class of its own.

The OpenAI and Anthropic SDKs' names work too, for code that catches them
(`status_code` says the HTTP status the upstream, or the daemon, meant):

    BadRequestError (400)        BadRequest, and an upstream's 400
    AuthenticationError (401)    NotConfigured (no key), and an upstream's 401
    PermissionDeniedError (403)  an upstream's 403
    NotFoundError (404)          NotFound, and an upstream's 404
    RateLimitError (429)         RateLimited
    InternalServerError (5xx)    an upstream's 5xx (529 overloaded included)
    APITimeoutError              UpstreamTimeout, and the client's own Timeout
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BudgetExceeded",
    "CircuitOpen",
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
    "TlsError",
    "UpstreamError",
    "UpstreamTimeout",
    "Cancelled",
    "ShuttingDown",
    "InternalError",
    "StorageError",
    "remote_error",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "RateLimitError",
    "InternalServerError",
    "APITimeoutError",
]


class ClaifError(Exception):
    """Base class of every error the client raises."""


class DaemonUnavailable(ClaifError):
    pass


class UntrustedDaemon(DaemonUnavailable):
    """The process behind the socket runs as another user: no prompt is sent to it."""


class ProtocolError(ClaifError):
    pass


class APITimeoutError(ClaifError):
    """The SDKs' name for a request that timed out (here or upstream)."""


class Timeout(APITimeoutError):
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


class APIStatusError(RemoteError):
    """The SDKs' base of HTTP-status errors."""

    status_code: int = 0


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    status_code = 500


class BadRequest(BadRequestError):
    pass


class InvalidRequest(BadRequest, TypeError, ValueError):
    """A request refused by the client before anything was sent (the field is
    named in the message). Also a TypeError and a ValueError, as the argument
    errors it replaces were."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_request", message)


class NotFound(NotFoundError):
    pass


class NotConfigured(AuthenticationError):
    pass


class UpstreamError(RemoteError):
    pass


class RateLimited(UpstreamError, RateLimitError):
    pass


class TlsError(UpstreamError):
    pass


class CircuitOpen(UpstreamError):
    pass


class UpstreamTimeout(RemoteError, APITimeoutError):
    status_code = 504


class UpstreamBadRequest(UpstreamError, BadRequestError):
    pass


class UpstreamAuthenticationError(UpstreamError, AuthenticationError):
    pass


class UpstreamPermissionDenied(UpstreamError, PermissionDeniedError):
    pass


class UpstreamNotFound(UpstreamError, NotFoundError):
    pass


class UpstreamServerError(UpstreamError, InternalServerError):
    pass


# An upstream's HTTP status -> the class of its upstream_error.
_BY_STATUS: dict[int, type[RemoteError]] = {400: UpstreamBadRequest, 401: UpstreamAuthenticationError,
                                            403: UpstreamPermissionDenied, 404: UpstreamNotFound}


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


class BudgetExceeded(RateLimitError):
    """A spending limit (budgets.*) is reached: trying again will not help until it resets."""


_BY_CODE: dict[str, type[RemoteError]] = {
    "forbidden": Forbidden,
    "bad_request": BadRequest,
    "unknown_method": BadRequest,
    "too_large": BadRequest,
    "unsupported": BadRequest,
    "not_found": NotFound,
    "not_configured": NotConfigured,
    "rate_limited": RateLimited,
    "tls_error": TlsError,
    "circuit_open": CircuitOpen,
    "upstream_error": UpstreamError,
    "timeout": UpstreamTimeout,
    "cancelled": Cancelled,
    "shutting_down": ShuttingDown,
    "internal": InternalError,
    "storage_error": StorageError,
    "budget_exceeded": BudgetExceeded,
}


def remote_error(
    code: str, message: str, retry_after: float | None = None, details: dict[str, Any] | None = None
) -> RemoteError:
    """The exception for an `Error` frame, of the class its code maps to."""
    cls = _BY_CODE.get(code, RemoteError)
    status = (details or {}).get("status")
    if code == "upstream_error" and isinstance(status, int):
        cls = _BY_STATUS.get(status, UpstreamServerError if status >= 500 else UpstreamError)
    error = cls(code, message, retry_after=retry_after, details=details)
    if isinstance(error, APIStatusError) and isinstance(status, int):
        error.status_code = status
    return error
