"""The configuration's schema: a section per component, typed, with its
defaults (docs/CONFIGURATION.md lists every key; a test holds them equal)."""

from __future__ import annotations

import os
import ssl
import urllib.parse
from typing import Literal

import msgspec

from ..redaction import redact_url
from .quantities import ByteSize, Duration


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    pass


class ClientConfig(_Section):
    # The offline provider until a real one is configured: a fresh install
    # answers something without keys or network.
    model: str = "echo/default"
    timeout: Duration = Duration(600.0)


class ProviderConfig(_Section):
    """A provider: `providers.NAME` (claifd/providers/registry.py has the types).
    `anthropic` and `openai` are built in with their public endpoints; any
    other name is an endpoint of the user's (Ollama, vLLM, OpenRouter, Azure...)."""

    # The API it speaks (a type of the provider registry: anthropic, openai,
    # azure). Empty: the name's own type for the built-in names, else openai.
    type: str = ""
    # As in each official SDK: Anthropic's without the version path,
    # OpenAI's with it (so any OpenAI-compatible server works by its /v1 URL).
    # Empty: the type's public endpoint (a type without one needs it set).
    base_url: str = ""
    # The key; else the keys of `api_keys` (spread over, each cooled on 429,
    # set aside on 401); else the variable `api_key_env` names (empty: the
    # type's own, ANTHROPIC_API_KEY / OPENAI_API_KEY, for the built-in names).
    api_key: str | None = None
    api_keys: list[str] = []
    api_key_env: str = ""
    # Extra headers sent with every request to it.
    headers: dict[str, str] = {}
    # Model ids it serves: a bare id found here routes to it.
    models: list[str] = []
    # Requests in flight to this provider; more wait in a FIFO queue.
    max_concurrency: int = 50
    # Longest wait for the answer to start (the first byte of its head); null: the pool's timeouts.
    timeout: Duration | None = None
    # anthropic: the `anthropic-version` header, and max_tokens when a request gives none.
    version: str = "2023-06-01"
    default_max_tokens: int = 4096
    # azure: the `api-version` query parameter.
    api_version: str = "2024-10-21"
    # The circuit breaker: this many failures in a row (connection, 5xx,
    # timeout) open it; after `circuit_cooldown` one probe call may pass.
    circuit_failures: int = 5
    circuit_cooldown: Duration = Duration(30.0)


def _builtin_providers() -> dict[str, ProviderConfig]:
    return {"anthropic": ProviderConfig(type="anthropic", base_url="https://api.anthropic.com"),
            "openai": ProviderConfig(type="openai", base_url="https://api.openai.com/v1")}


class RoutingConfig(_Section):
    # Model or alias -> the models tried in order when it fails before its
    # answer started (overloaded, rate limited after retries, 5xx, timeout,
    # connection refused, circuit open).
    fallbacks: dict[str, list[str]] = {}


class PoolConfig(_Section):
    # The upstream HTTP client: aiohttp, the only one since httpx's httpcore
    # was measured against it (bench/bench_transport.py); "auto" is aiohttp.
    transport: Literal["auto", "aiohttp"] = "auto"
    max_connections: int = 100
    # A daemon sees bursts from many clients: keeping connections warm for
    # them is the point (idle ones still close after keepalive_expiry).
    # aiohttp keeps every idle connection until keepalive_expiry (it counts
    # no idle ones); 0 turns keep-alive off.
    max_keepalive: int = 50
    keepalive_expiry: Duration = Duration(30.0)
    connect_timeout: Duration = Duration(10.0)
    # Longest silence between two reads of a response (a stream may pause).
    read_timeout: Duration = Duration(600.0)
    write_timeout: Duration = Duration(30.0)
    # Longest wait for a free connection from the pool.
    pool_timeout: Duration = Duration(30.0)
    # Longest time for a whole answer, head and body (read_timeout bounds the
    # gap between two reads; this, a server that drips a byte at a time).
    answer_timeout: Duration = Duration(600.0)
    # A forward proxy for every upstream call, "http://[user:pass@]host:port"
    # (https upstreams go through CONNECT); "" means none. Unset (null), the
    # daemon's HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY decide, as in httpx.
    proxy: str | None = None
    # A PEM bundle of CAs trusted besides the default ones (a company's
    # TLS-inspecting gateway); SSL_CERT_FILE is honoured too.
    ca_file: str = ""
    # A client certificate (PEM) and its key, for gateways that want mTLS.
    client_cert: str = ""
    client_key: str = ""
    # Check upstream certificates; false logs a warning every time it applies.
    verify: bool = True
    # The largest answer read from an upstream, counted after decompression
    # (a compressed "bomb" stops here); a stream counts as a whole.
    max_response_bytes: ByteSize = ByteSize(64 * 1024**2)

    def __post_init__(self) -> None:
        if self.proxy:
            parts = urllib.parse.urlsplit(self.proxy)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"pool.proxy must be http://[user:pass@]host:port, not {redact_url(self.proxy)!r}")
        if self.client_key and not self.client_cert:
            raise ValueError("pool.client_key needs pool.client_cert")
        # Loaded now, so a wrong path or a broken PEM is refused with the
        # change that brought it (the last good configuration stays).
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca_file:
            try:
                probe.load_verify_locations(os.path.expanduser(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"pool.ca_file: cannot load {self.ca_file} ({exc})") from None
        if self.client_cert:
            try:
                probe.load_cert_chain(os.path.expanduser(self.client_cert),
                                      os.path.expanduser(self.client_key) if self.client_key else None)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"pool.client_cert/client_key: cannot load {self.client_cert} ({exc})") from None


class RetryConfig(_Section):
    max_attempts: int = 4
    base_delay: Duration = Duration(0.5)
    max_delay: Duration = Duration(30.0)
    # Total time for all attempts of one request, waits included.
    deadline: Duration = Duration(120.0)


class SemanticCacheConfig(_Section):
    """The semantic tier (claifd/semantic/): off unless enabled here or per request."""

    enabled: bool = False
    # Namespaces where it is on even when `enabled` is false.
    namespaces: list[str] = []
    # Cosine similarity a candidate needs (its guards must pass too); 0 means
    # the embedder's own default, the threshold with 100% precision on the
    # labelled set (tests/data/semantic_pairs.json).
    threshold: float = 0.0
    # auto (the best installed: wordllama when the `semantic` extra is there,
    # else hashed-ngrams), hashed-ngrams (built in), wordllama (the `semantic` extra), or openai
    # (an OpenAI-compatible /v1/embeddings at providers.openai.base_url).
    embedder: Literal["auto", "hashed-ngrams", "wordllama", "openai"] = "auto"
    # The embeddings model asked for by the openai embedder.
    model: str = "text-embedding-3-small"


class CacheConfig(_Section):
    enabled: bool = True
    # The disk tier's directory; "" keeps the cache in memory only.
    dir: str = "~/.claif/cache"
    default_ttl: Duration = Duration(3600.0)
    # The longest any entry lives (smart extensions, aggressive strategy).
    max_ttl: Duration = Duration(30 * 86400.0)
    # Bound on the disk tier's stored (compressed) bytes.
    max_size: ByteSize = ByteSize(100 * 1000**2)
    memory_max_bytes: ByteSize = ByteSize(64 * 1024**2)
    # Answers larger than this are served but not stored.
    max_entry_bytes: ByteSize = ByteSize(4 * 1024**2)
    strategy: Literal["conservative", "smart", "aggressive"] = "conservative"
    compression: Literal["zlib", "zstd", "none"] = "zlib"
    # Namespace of requests that name none.
    namespace: str = "default"
    semantic: SemanticCacheConfig = msgspec.field(default_factory=SemanticCacheConfig)
    # Where the second tier lives: "local" (the SQLite file in `dir`) or
    # "redis" (shared by every daemon on `redis.url`; claifd/cache/redis_store.py).
    backend: Literal["local", "redis"] = "local"


class RedisConfig(_Section):
    """Redis, when a backend uses it (the `redis` extra)."""

    # redis://, rediss:// or unix:// (e.g. unix:///run/redis/redis.sock).
    url: str = "redis://localhost:6379/0"
    # Sentinel instead of `url`: ["host:port", ...] of the sentinels, and the
    # name of the replica set they watch (claifd/redis_client.py).
    sentinels: list[str] = []
    service_name: str = "mymaster"
    # `url` names one node of a Redis Cluster (the others are discovered).
    cluster: bool = False
    # Every key the daemons write starts with this.
    prefix: str = "claif:"
    max_connections: int = 20
    # A command that takes longer fails (a miss), so a stuck Redis never stalls requests.
    timeout: Duration = Duration(1.0)
    # The longest a near-cache (memory) copy of a shared answer is served
    # without reading Redis again: the staleness bound if an invalidation is lost.
    near_cache_ttl: Duration = Duration(30.0)
    # Single-flight across daemons: the lease on an upstream call, renewed
    # while it runs; a crashed leader holds its followers at most this long.
    lock_ttl: Duration = Duration(10.0)


class Price(_Section):
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0
    # The provider's prompt cache (None: the provider's rule, see claifd/cache/prices.py).
    cache_write: float | None = None
    cache_read: float | None = None


class BudgetLimit(_Section):
    """USD a scope may spend a day and a month (local calendar); None: no limit."""

    daily_usd: float | None = None
    monthly_usd: float | None = None


class BudgetsConfig(_Section):
    """What calls may cost (claifd/spend.py): a global limit, and limits per
    provider, per "provider/model" pattern (fnmatch) and per namespace. At
    `warn_at` of a limit health warns; at the limit `action` decides."""

    daily_usd: float | None = None
    monthly_usd: float | None = None
    providers: dict[str, BudgetLimit] = {}
    models: dict[str, BudgetLimit] = {}
    namespaces: dict[str, BudgetLimit] = {}
    # refuse: the error budget_exceeded (HTTP 429, x-should-retry: false);
    # downgrade: the request goes to auto.fast instead (reported in `optimized.budget`).
    action: Literal["refuse", "downgrade"] = "refuse"
    warn_at: float = 0.8
    # Where spend is kept (SQLite): it survives restarts.
    ledger: str = "~/.claif/spend.db"


class ContextConfig(_Section):
    # Estimated tokens above which a session's context is trimmed.
    max_tokens: int = 100_000
    # How many of the newest messages a trimmed context keeps (at most).
    recent: int = 8


class SessionConfig(_Section):
    # Where sessions live: "local" (SQLite in `directory`) or "redis" (shared
    # by every daemon on `redis.url`; claifd/sessions/redis_store.py).
    backend: Literal["local", "redis"] = "local"
    directory: str = "~/.claif/sessions"
    memory_budget: ByteSize = ByteSize(64 * 1024**2)
    context: ContextConfig = msgspec.field(default_factory=ContextConfig)


class AutoConfig(_Section):
    """Rules for `model: "auto"` (see claifd/auto.py)."""

    fast: str = "anthropic/claude-haiku-4-5"
    balanced: str = "anthropic/claude-sonnet-4-5"
    capable: str = "anthropic/claude-opus-4-1"
    short_chars: int = 500
    long_chars: int = 8000
    capable_keywords: list[str] = msgspec.field(default_factory=lambda: [
        "analyze", "analyse", "analysis", "compare", "evaluate", "prove", "step by step",
        "in depth", "architecture", "trade-off", "tradeoff",
    ])


class ComplexityTokens(_Section):
    """max_tokens by `complexity_hint`; 0 leaves that hint's max_tokens to the provider."""

    simple: int = 1024
    moderate: int = 4096
    complex: int = 16384


class OptimizerConfig(_Section):
    """The request optimizer (claifd/optimizer.py). Each change it makes to a
    request is reported in the reply's `optimized`."""

    enabled: bool = True
    # A request with a complexity_hint and no max_tokens gets this max_tokens.
    max_tokens: ComplexityTokens = msgspec.field(default_factory=ComplexityTokens)
    # A request estimated longer than its model's window (less the answer's
    # max_tokens) loses its oldest turns: system prompt, first user message,
    # tool calls with their results and the newest turns are kept.
    trim_context: bool = True
    # Provider prompt caching placed for the caller (claifd/prompt_cache.py):
    # cache_control breakpoints on the tools, the system prompt and the
    # longest turn seen before, for a model with explicit prompt caching.
    prompt_cache: bool = True
    # Context windows in tokens by "provider/model" pattern (fnmatch); the
    # longest matching pattern wins.
    context_windows: dict[str, int] = msgspec.field(default_factory=lambda: {
        "*": 128_000,
        "anthropic/*": 200_000,
        "openai/gpt-4.1*": 1_047_576,
        "openai/gpt-5*": 400_000,
        "echo/*": 200_000,
    })


class BatchConfig(_Section):
    concurrency: int = 5


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"


class LogNamespaceConfig(_Section):
    # Keep the text (prompt, system, answer) of this namespace's requests.
    content: bool = True


class LogConfig(_Section):
    """The request log (`claif log`, claifd/request_log.py): every completion
    of every front, in SQLite, kept across restarts."""

    enabled: bool = True
    # (a directory of its own: ~/.claif itself is watched for config edits)
    path: str = "~/.claif/log/requests.db"
    # Keep the text (prompt, system, answer); off: the figures only.
    content: bool = True
    # Per cache namespace: `log.namespaces.NS.content false` keeps that namespace's text out.
    namespaces: dict[str, LogNamespaceConfig] = {}
    # The newest this many entries are kept, none older than max_age.
    max_entries: int = 100_000
    max_age: Duration = Duration(90 * 86400.0)


class HttpFrontConfig(_Section):
    """The HTTP front (claifd/front.py): the OpenAI and Anthropic APIs over HTTP."""

    enabled: bool = False
    # Its Unix socket ("": claifd-http.sock beside the daemon's socket).
    socket: str = ""
    # "HOST:PORT" of a TCP listener too ("": none); its callers present the
    # local token (`claif token`). Loopback unless you mean it.
    listen: str = ""
    # Host headers answered on TCP besides its own address and localhost /
    # 127.0.0.1 / [::1] with its port (DNS rebinding: a web page's request
    # to "evil.example" resolving to 127.0.0.1 carries that Host and is refused).
    allowed_hosts: list[str] = []
    # Origins (scheme://host[:port]) whose requests are answered; a request
    # carrying any other Origin (a browser's cross-site call) is refused.
    allowed_origins: list[str] = []
    # The request line and headers must arrive within this (slowloris).
    header_timeout: Duration = Duration(10.0)
    # Connections open at once; more are closed as they come.
    max_connections: int = 1024
    # Request body bytes held over all its connections at once; past it, 503.
    max_buffered: ByteSize = ByteSize(256 * 1024**2)


class ServerConfig(_Section):
    # How long SIGTERM waits for requests in flight before cancelling them.
    drain_timeout: Duration = Duration(30.0)
    # Requests one connection may have in flight before the daemon stops
    # reading from it (backpressure, not an error).
    max_in_flight_per_connection: int = 256
    # A connection that has sent part of a frame (or not finished its
    # handshake) and then nothing more for this long is closed: a stalled
    # sender must not hold a buffer of up to 16 MiB forever.
    frame_timeout: Duration = Duration(30.0)
    # Other users (uids) whose processes may use this daemon. Its own uid is
    # always allowed; nobody else is unless listed here.
    allowed_uids: list[int] = []
    http: HttpFrontConfig = msgspec.field(default_factory=HttpFrontConfig)


class MetricsConfig(_Section):
    # Record request, upstream and token figures (off: counters only).
    enabled: bool = True
    # "HOST:PORT" to serve GET /metrics and GET /health over HTTP ("": off).
    # Loopback unless you mean it: the figures show models and traffic.
    listen: str = ""


class HealthConfig(_Section):
    # The background checks run this often; `health` answers from their last run.
    interval: Duration = Duration(15.0)
    # Each check's time limit (a check that takes longer is unhealthy).
    timeout: Duration = Duration(5.0)
    # A provider slower than this to answer GET /v1/models is a warning.
    provider_latency_warning: Duration = Duration(2.0)
    # Upstream calls (not attempts) in this window rate the providers:
    # half failed is a warning, all failed (3 at least) is unhealthy.
    failure_window: Duration = Duration(300.0)
    # Free space on the cache's and sessions' file systems.
    disk_warning_free: ByteSize = ByteSize(1024**3)
    disk_critical_free: ByteSize = ByteSize(100 * 1024**2)
    # Memory the system still has available.
    memory_warning_available: ByteSize = ByteSize(512 * 1024**2)
    memory_critical_available: ByteSize = ByteSize(128 * 1024**2)
    # The daemon's RSS above its budgets (cache.memory_max_bytes +
    # session.memory_budget) by more than this is a warning.
    rss_headroom: ByteSize = ByteSize(512 * 1024**2)


class Config(_Section):
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=_builtin_providers)
    models: dict[str, str] = {}
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    auto: AutoConfig = msgspec.field(default_factory=AutoConfig)
    optimizer: OptimizerConfig = msgspec.field(default_factory=OptimizerConfig)
    prices: dict[str, Price] = {}
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
    pool: PoolConfig = msgspec.field(default_factory=PoolConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    session: SessionConfig = msgspec.field(default_factory=SessionConfig)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)

    def __post_init__(self) -> None:
        # The built-in names are always there, with their public endpoints;
        # each provider knows its type: the built-in names their own, others openai.
        for name, builtin in _builtin_providers().items():
            section = self.providers.setdefault(name, builtin)
            if not section.base_url and section.type in ("", name):
                section.base_url = builtin.base_url
        for name, section in self.providers.items():
            if not section.type:
                section.type = name if name in ("anthropic", "openai") else "openai"
