"""The daemon's configuration: one typed schema, built from layered sources.

Layers, lowest first: defaults < global file (~/.claif/config.json) < project
file (.claif.json) < environment (CLAIF_*) < runtime. Each layer is a nested
dict; they are merged key by key, then the whole result is validated by
`msgspec.convert` into `Config` in one go, so a configuration is either fully
valid or rejected whole.

Sizes ("100MB", "64 MiB", or bytes) and durations (seconds, or "30s", "5m",
"1h") are parsed here and nowhere else, by the `ByteSize` and `Duration` types.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import ssl
import stat
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from .redaction import redact_url

__all__ = [
    "Config",
    "ByteSize",
    "Duration",
    "ConfigError",
    "parse_size",
    "parse_duration",
    "default_global_path",
    "env_layer",
    "read_file_layer",
    "parse_config_text",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "config_depth",
    "merge_layers",
    "build_config",
    "unknown_keys",
]


class ByteSize(int):
    """A size in bytes; accepts integers or strings like "100MB" / "64 MiB"."""


class Duration(float):
    """A duration in seconds; accepts numbers or strings like "30s", "5m", "1h"."""


_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"size must be a finite number of bytes, not negative: {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _QUANTITY.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"not a size: {value!r} (use bytes or e.g. '100MB', '64MiB')")


def parse_duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration must be a finite number of seconds, not negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _QUANTITY.match(value)
        if m and m.group(2).lower() in _DURATION_UNITS:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '30s', '5m', '1h')")


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is ByteSize:
        return ByteSize(parse_size(value))
    if type_ is Duration:
        return Duration(parse_duration(value))
    raise NotImplementedError(f"no decoder for {type_}")


def _enc_hook(value: Any) -> Any:
    if isinstance(value, ByteSize):
        return int(value)
    if isinstance(value, Duration):
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value)}")


# --------------------------------------------------------------------------
# The schema. Every field has a default, so an empty file is a valid config.


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    pass


class ClientConfig(_Section):
    # The offline provider until a real one is configured: a fresh install
    # answers something without keys or network.
    model: str = "echo/default"
    timeout: Duration = Duration(600.0)


class ProviderConfig(_Section):
    # As in each official SDK: Anthropic's without the version path,
    # OpenAI's with it (so any OpenAI-compatible server works by its /v1 URL).
    base_url: str = ""
    # None: fall back to ANTHROPIC_API_KEY / OPENAI_API_KEY.
    api_key: str | None = None
    # Requests in flight to this provider; more wait in a FIFO queue.
    max_concurrency: int = 50


class AnthropicConfig(ProviderConfig):
    base_url: str = "https://api.anthropic.com"
    version: str = "2023-06-01"
    # The Messages API requires max_tokens; used when a request gives none.
    default_max_tokens: int = 4096


class OpenAIConfig(ProviderConfig):
    base_url: str = "https://api.openai.com/v1"


class ProvidersConfig(_Section):
    anthropic: AnthropicConfig = msgspec.field(default_factory=AnthropicConfig)
    openai: OpenAIConfig = msgspec.field(default_factory=OpenAIConfig)


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
    # hashed-ngrams (built in), wordllama (the `semantic` extra), or openai
    # (an OpenAI-compatible /v1/embeddings at providers.openai.base_url).
    embedder: Literal["hashed-ngrams", "wordllama", "openai"] = "hashed-ngrams"
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


class HttpFrontConfig(_Section):
    """The HTTP front (claifd/front.py): the OpenAI and Anthropic APIs over HTTP."""

    enabled: bool = False
    # Its Unix socket ("": claifd-http.sock beside the daemon's socket).
    socket: str = ""
    # "HOST:PORT" of a TCP listener too ("": none); its callers present the
    # local token (`claif token`). Loopback unless you mean it.
    listen: str = ""


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
    providers: ProvidersConfig = msgspec.field(default_factory=ProvidersConfig)
    models: dict[str, str] = {}
    auto: AutoConfig = msgspec.field(default_factory=AutoConfig)
    optimizer: OptimizerConfig = msgspec.field(default_factory=OptimizerConfig)
    prices: dict[str, Price] = {}
    pool: PoolConfig = msgspec.field(default_factory=PoolConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    session: SessionConfig = msgspec.field(default_factory=SessionConfig)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)


class ConfigError(Exception):
    """A layer cannot be read or the merged configuration is invalid."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source
        self.message = message


# --------------------------------------------------------------------------
# Layers.


def default_global_path() -> Path:
    return Path(os.environ.get("HOME") or Path.home()) / ".claif" / "config.json"


# A configuration is a few KiB; anything far larger is a mistake (or an
# attack) that must not stall the daemon while it reads and parses it.
MAX_CONFIG_BYTES = 1024 * 1024


def read_file_layer(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when the file does not exist.

    Only a regular file is read (a FIFO, a device or /dev/zero behind a
    symlink is refused without blocking), at most MAX_CONFIG_BYTES of it.
    Every way the content can be wrong is a `ConfigError`, never another
    exception: a config edit must not take the daemon down.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("not a regular file (a FIFO, device or directory is not read)", source=str(path))
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"too large ({info.st_size} bytes; the limit is {MAX_CONFIG_BYTES})", source=str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"too large (over {MAX_CONFIG_BYTES} bytes)", source=str(path))
    return parse_config_text(raw, str(path))


def parse_config_text(raw: bytes | str, source: str) -> dict[str, Any]:
    """A config file's content as a dict, or `ConfigError` saying what is wrong with it."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
                              source=source) from exc
    else:
        text = raw
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=source) from exc
    except RecursionError as exc:
        raise ConfigError("JSON nested too deeply", source=source) from exc
    except ValueError as exc:  # e.g. an integer literal with too many digits
        raise ConfigError(f"invalid JSON: {exc}", source=source) from exc
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a JSON object", source=source)
    if config_depth(data) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", source=source)
    return data


# The schema is 4 levels deep; a little room for maps of objects in values.
MAX_CONFIG_DEPTH = 16


def config_depth(value: Any) -> int:
    """How deeply `value` nests (iteratively: a deep document must not overflow the stack)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_CONFIG_DEPTH:
                break
        if isinstance(node, dict):
            todo.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            todo.extend((v, depth + 1) for v in node)
    return deepest


_ENV_ALIASES = {
    "CLAIF_DEFAULT_MODEL": ("client", "model"),
    "CLAIF_TIMEOUT": ("client", "timeout"),
    "CLAIF_SESSION_DIR": ("session", "directory"),
    "CLAIF_CACHE_TTL": ("cache", "default_ttl"),
    "CLAIF_LOG_LEVEL": ("logging", "level"),
}


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """`CLAIF_<SECTION>__<KEY>` variables and the documented aliases, as a layer.

    Values stay strings here; `build_config` converts them by the schema's type.
    Variables without a double underscore (CLAIF_SOCKET...) are not config keys.
    """
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if name in _ENV_ALIASES:
            path: tuple[str, ...] = _ENV_ALIASES[name]
        elif name.startswith("CLAIF_") and "__" in name:
            path = tuple(part.lower() for part in name[len("CLAIF_") :].split("__"))
            if not all(path):
                continue
        else:
            continue
        node = layer
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
    return layer


def merge_layers(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge dicts; later layers win key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        _merge_into(merged, layer)
    return merged


def _merge_into(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value)
        elif isinstance(value, Mapping):
            dst[key] = {}
            _merge_into(dst[key], value)
        else:
            dst[key] = value


def unknown_keys(data: Mapping[str, Any], schema: type[msgspec.Struct] = Config, prefix: str = "") -> list[str]:
    """Dotted names in `data` that the schema does not know."""
    fields = {f.name: f.type for f in msgspec.structs.fields(schema)}
    unknown: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            unknown.append(dotted)
            continue
        sub = fields[key]
        if isinstance(sub, type) and issubclass(sub, msgspec.Struct) and isinstance(value, Mapping):
            unknown.extend(unknown_keys(value, sub, dotted + "."))
    return unknown


# Values outside these bounds would stall or break the daemon (a limit of 0
# never admits a request, a NaN TTL poisons a disk write). Inclusive bounds;
# None: unbounded on that side. Every numeric key is listed (a test checks).
RANGES: dict[str, tuple[float | None, float | None]] = {
    "client.timeout": (0.001, None),
    "providers.*.max_concurrency": (1, 100_000),
    "providers.anthropic.default_max_tokens": (1, None),
    "pool.max_connections": (1, 100_000),
    "pool.max_keepalive": (0, 100_000),
    "pool.keepalive_expiry": (0, None),
    "pool.connect_timeout": (0.001, None),
    "pool.read_timeout": (0.001, None),
    "pool.write_timeout": (0.001, None),
    "pool.pool_timeout": (0.001, None),
    "pool.answer_timeout": (0.001, None),
    # At least a mebibyte: no provider's answer is smaller than that limit.
    "pool.max_response_bytes": (1024 * 1024, None),
    "retry.max_attempts": (1, 100),
    "retry.base_delay": (0, None),
    "retry.max_delay": (0, None),
    "retry.deadline": (0.001, None),
    "cache.semantic.threshold": (0.0, 1.0),
    "cache.default_ttl": (0, None),
    "cache.max_ttl": (0, None),
    "cache.max_size": (0, None),
    "cache.memory_max_bytes": (0, None),
    "cache.max_entry_bytes": (1024, None),
    "redis.max_connections": (1, 10_000),
    "redis.timeout": (0.001, None),
    "redis.near_cache_ttl": (0, None),
    "redis.lock_ttl": (0.1, None),
    "prices.*.input": (0, None),
    "prices.*.output": (0, None),
    "session.memory_budget": (0, None),
    "session.context.max_tokens": (1, None),
    "session.context.recent": (1, None),
    "auto.short_chars": (0, None),
    "optimizer.max_tokens.simple": (0, None),
    "optimizer.max_tokens.moderate": (0, None),
    "optimizer.max_tokens.complex": (0, None),
    "optimizer.context_windows.*": (1, None),
    "auto.long_chars": (0, None),
    "batch.concurrency": (1, 10_000),
    "server.drain_timeout": (0, None),
    "server.max_in_flight_per_connection": (1, 1_000_000),
    "server.frame_timeout": (0.001, None),
    "server.allowed_uids": (0, 2**32 - 1),
    "health.interval": (0.1, 86400),
    "health.timeout": (0.01, 600),
    "health.provider_latency_warning": (0, None),
    "health.failure_window": (1, 86400),
    "health.disk_warning_free": (0, None),
    "health.disk_critical_free": (0, None),
    "health.memory_warning_available": (0, None),
    "health.memory_critical_available": (0, None),
    "health.rss_headroom": (0, None),
}


def check_ranges(config: Config) -> list[str]:
    """Every value of `config` outside its range (or not finite), as messages."""
    flat = _flatten_numbers(to_builtins(config))
    problems = []
    for key, value in flat:
        parts = key.split(".")
        bounds = RANGES.get(key)
        if bounds is None and len(parts) == 3:
            bounds = RANGES.get(f"{parts[0]}.*.{parts[2]}")
        if not math.isfinite(value):
            problems.append(f"{key} must be a finite number, got {value!r}")
            continue
        if bounds is None:
            continue
        low, high = bounds
        if low is not None and value < low:
            problems.append(f"{key} must be >= {low:g}, got {value!r}")
        elif high is not None and value > high:
            problems.append(f"{key} must be <= {high:g}, got {value!r}")
    return problems


def _flatten_numbers(doc: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, number) for every number in `doc`, list items under their list's key."""
    out: list[tuple[str, float]] = []
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.extend(_flatten_numbers(v, key + "."))
        else:
            out.extend((key, x) for x in (v if isinstance(v, list) else [v])
                       if isinstance(x, (int, float)) and not isinstance(x, bool))
    return out


def _embedder_problems(semantic: SemanticCacheConfig) -> list[str]:
    """An embedder that cannot load is an invalid configuration (caught by
    `config set` and reloads), not a semantic tier that silently never hits."""
    if semantic.embedder == "wordllama" and importlib.util.find_spec("wordllama") is None:
        return ["cache.semantic.embedder 'wordllama' needs the wordllama package: pip install 'claifd[semantic]'"]
    if semantic.embedder == "openai" and not semantic.model:
        return ["cache.semantic.embedder 'openai' needs cache.semantic.model (an embeddings model)"]
    return []


def build_config(merged: Mapping[str, Any]) -> Config:
    """Validate a merged layer dict into a `Config`, or raise `ConfigError`
    (naming every value that is out of range, not only the first)."""
    try:
        config = msgspec.convert(merged, Config, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from exc
    problems = check_ranges(config)
    problems.extend(_embedder_problems(config.cache.semantic))
    for sentinel in config.redis.sentinels:
        host, sep, port = sentinel.rpartition(":")
        if not sep or not host or not port.isdigit():
            problems.append(f"redis.sentinels entries must be HOST:PORT, got {sentinel!r}")
    for key, listen in (("metrics.listen", config.metrics.listen), ("server.http.listen", config.server.http.listen)):
        if listen:
            host, sep, port = listen.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                problems.append(f"{key} must be HOST:PORT (e.g. 127.0.0.1:9464), got {listen!r}")
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def _type_label(tp: Any) -> str:
    if tp is ByteSize:
        return "size"
    if tp is Duration:
        return "duration"
    origin = getattr(tp, "__origin__", None)
    if origin is Literal:
        return "one of " + ", ".join(tp.__args__)
    if origin is dict:
        return "map"
    if origin is list:
        return "list"
    args = getattr(tp, "__args__", None)
    if args and type(None) in args:
        return _type_label(next(a for a in args if a is not type(None))) + " or null"
    return getattr(tp, "__name__", str(tp))


def describe_schema(schema: type[msgspec.Struct] = Config, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, type label, default) for every key, in schema order:
    docs/CONFIGURATION.md lists exactly these (a test checks)."""
    defaults = to_builtins(Config())
    rows: list[tuple[str, str, Any]] = []
    for f in msgspec.structs.fields(schema):
        key = prefix + f.name
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            rows.extend(describe_schema(f.type, key + "."))
            continue
        node: Any = defaults
        for part in key.split("."):
            node = node[part]
        rows.append((key, _type_label(f.type), node))
    return rows


def to_builtins(config: Config) -> dict[str, Any]:
    return msgspec.to_builtins(config, enc_hook=_enc_hook)  # type: ignore[no-any-return]
