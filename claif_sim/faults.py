"""The simulator's state and its faults: what `/_sim/config` can change
(latency, errors, rate limits, holds, broken answers), the counters
`/_sim/stats` shows, and the checks every request passes first."""

from __future__ import annotations

import dataclasses
import email.utils
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

_RECENT = 50


def _api_key(headers: dict[str, str]) -> str:
    """Anthropic takes x-api-key (or, in newer SDKs, a bearer token); OpenAI a bearer token."""
    return (headers.get("x-api-key") or headers.get("api-key")  # Azure OpenAI's
            or headers.get("authorization", "").removeprefix("Bearer ").strip())


@dataclass
class Faults:
    """What the simulator does wrong, on purpose."""

    latency_ms: float = 0.0  # before the response starts
    token_delay_ms: float = 0.0  # between streamed tokens
    errors: list[int] = field(default_factory=list)  # statuses for the next requests, in order
    retry_after: float = 0.0  # the retry-after sent with an injected 429/529
    # How retry-after is written: "seconds", "ms" (retry-after-ms, as OpenAI
    # sends) or "date" (an HTTP date, rounded up to the next whole second).
    retry_after_format: str = "seconds"
    stream_cut_after: int | None = None  # close the connection after N streamed tokens
    stream_error_after: int | None = None  # send an SSE error event after N tokens
    # Stream the text in pieces of this many characters (cutting words) instead
    # of a word per event, and write each event in two writes split inside it
    # (inside a multi-byte character when there is one).
    chunk_chars: int | None = None
    # Only these API keys are accepted (401 for any other); None: any key.
    api_keys: list[str] | None = None
    # False: a request without a key is served (a local Ollama or vLLM).
    require_key: bool = True
    # The model ids GET /v1/models lists (None: the built-in lists).
    models: list[str] | None = None
    # Completion requests wait, before anything else, until POST /_sim/release.
    hold: bool = False
    # A 200 that is wrong (plain, non-streamed answers): "wrong_types" (usage
    # "lots", content a string), "bad_usage" (token counts "lots" and -1), "empty" (no content), "html" (JSON labelled
    # text/html), "not_json", "huge" (a 20 MB answer).
    malformed: str | None = None
    # How a 401 names the refused key: "whole", "masked" (sk-ant-a****WXYZ, as
    # OpenAI does) or "cut" (a long plain-text body whose first 200 bytes end
    # inside the key).
    key_echo: str = "whole"
    # POST /v1/embeddings answers with this status (an error body) instead.
    embeddings_status: int | None = None

@dataclass
class SimState:
    startup: Faults
    faults: Faults = field(default_factory=Faults)
    requests: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0
    errors_injected: int = 0
    disconnects: int = 0
    held: int = 0
    connections_opened: int = 0
    connections_open: int = 0
    embeddings: int = 0  # /v1/embeddings requests (not counted in `requests`)
    by_path: dict[str, int] = field(default_factory=dict)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_RECENT))
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # The prompt cache: prefix fingerprint -> when it expires (answers.anthropic_usage, openai_cached).
    prompt_cache: dict[str, float] = field(default_factory=dict)

    released: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.faults = dataclasses.replace(self.startup, errors=list(self.startup.errors))
        self.release()
        self.requests = self.errors_injected = self.disconnects = self.connections_opened = self.embeddings = 0
        self.peak_concurrency = self.in_flight
        self.by_path.clear()
        self.recent.clear()
        self.prompt_cache.clear()

    def release(self) -> None:
        """Let held requests go on; later ones are held again while `hold` is set."""
        self.released.set()
        self.released = anyio.Event()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_concurrency,
            "errors_injected": self.errors_injected,
            "disconnects": self.disconnects,
            "connections_opened": self.connections_opened,
            "connections_open": self.connections_open,
            "by_path": dict(self.by_path),
            "pending_errors": list(self.faults.errors),
            "held": self.held,
            "embeddings": self.embeddings,
        }

def _retry_after_headers(faults: Faults) -> list[tuple[str, str]]:
    if faults.retry_after_format == "ms":
        return [("retry-after-ms", f"{faults.retry_after * 1000:g}")]
    if faults.retry_after_format == "date":
        when = math.ceil(time.time() + faults.retry_after)
        return [("retry-after", email.utils.formatdate(when, usegmt=True))]
    return [("retry-after", f"{faults.retry_after:g}")]

def _check_request(
    anthropic: bool, headers: dict[str, str], body: dict[str, Any], accepted: list[str] | None,
    require_key: bool = True,
) -> tuple[int, str] | None:
    key = _api_key(headers)
    if accepted is not None and key and key not in accepted:
        return 401, f"Incorrect API key provided: {key}"
    if anthropic:
        if not key and require_key:
            return 401, "x-api-key header is required"
        if not headers.get("anthropic-version"):
            return 400, "anthropic-version header is required"
        if not isinstance(body.get("max_tokens"), int):
            return 400, "max_tokens: Field required"
    elif not key and require_key:
        return 401, "You didn't provide an API key."
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return 400, "messages: at least one message is required"
    if not isinstance(body.get("model"), str):
        return 400, "model: Field required"
    return None
