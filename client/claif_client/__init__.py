"""Thin client for the claifd daemon.

    from claif_client import Client
    with Client() as c:
        print(c.complete("Hello!").text)

`AsyncClient` (anyio) is imported on first use so that the blocking client and
the `claif` CLI start without loading anyio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._sync import Client, CompletionStream
from ._version import __version__
from .errors import (
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequest,
    BadRequestError,
    BudgetExceeded,
    Cancelled,
    CircuitOpen,
    ClaifError,
    DaemonUnavailable,
    Forbidden,
    InternalError,
    InternalServerError,
    InvalidRequest,
    NotConfigured,
    NotFound,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimited,
    RateLimitError,
    RemoteError,
    ShuttingDown,
    StorageError,
    Timeout,
    TlsError,
    UntrustedDaemon,
    UpstreamError,
    UpstreamTimeout,
)
from .protocol import CacheControl, CompletionRequest, CompletionResponse, Message, Usage

if TYPE_CHECKING:
    from ._async import AsyncClient, AsyncCompletionStream

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "CompletionStream",
    "AsyncCompletionStream",
    "CompletionRequest",
    "CompletionResponse",
    "CacheControl",
    "Message",
    "Usage",
    "ClaifError",
    "DaemonUnavailable",
    "ProtocolError",
    "Timeout",
    "RemoteError",
    "BadRequest",
    "NotFound",
    "NotConfigured",
    "RateLimited",
    "TlsError",
    "BudgetExceeded",
    "CircuitOpen",
    "UpstreamError",
    "UpstreamTimeout",
    "Cancelled",
    "ShuttingDown",
    "InternalError",
    "StorageError",
    "Forbidden",
    "UntrustedDaemon",
    "InvalidRequest",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
]


def __getattr__(name: str) -> Any:
    if name in ("AsyncClient", "AsyncCompletionStream"):
        from . import _async

        return getattr(_async, name)
    raise AttributeError(f"module 'claif_client' has no attribute {name!r}")
