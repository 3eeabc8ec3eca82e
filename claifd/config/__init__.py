"""The daemon's configuration: one typed schema (schema.py), built from
layered sources (loader.py).

Layers, lowest first: defaults < global file (~/.claif/config.json) < project
file (.claif.json) < environment (CLAIF_*) < runtime. Each layer is a nested
dict; they are merged key by key, then the whole result is validated by
`msgspec.convert` into `Config` in one go, so a configuration is either fully
valid or rejected whole.

Sizes ("100MB", "64 MiB", or bytes) and durations (seconds, or "30s", "5m",
"1h") are parsed here and nowhere else, by the `ByteSize` and `Duration` types.
"""

from __future__ import annotations

from .loader import (
    ENV_ALIASES,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    RANGES,
    ConfigError,
    build_config,
    check_ranges,
    config_depth,
    default_global_path,
    describe_schema,
    env_layer,
    merge_layers,
    parse_config_text,
    read_file_layer,
    to_builtins,
    unknown_keys,
)
from .quantities import ByteSize, Duration, parse_duration, parse_size
from .schema import (
    AutoConfig,
    BatchConfig,
    BudgetLimit,
    BudgetsConfig,
    CacheConfig,
    ClientConfig,
    ComplexityTokens,
    Config,
    ContextConfig,
    HealthConfig,
    HttpFrontConfig,
    LogConfig,
    LoggingConfig,
    MetricsConfig,
    OptimizerConfig,
    PoolConfig,
    Price,
    ProviderConfig,
    RedisConfig,
    RetryConfig,
    RoutingConfig,
    SemanticCacheConfig,
    ServerConfig,
    SessionConfig,
)

__all__ = [
    "AutoConfig", "BatchConfig", "ByteSize", "CacheConfig", "ClientConfig", "ComplexityTokens",
    "Config", "ConfigError", "ContextConfig", "Duration", "HealthConfig", "HttpFrontConfig", "LogConfig", "LoggingConfig",
    "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "MetricsConfig", "OptimizerConfig", "BudgetsConfig", "BudgetLimit", "PoolConfig", "Price",
    "ProviderConfig", "RoutingConfig", "RANGES", "RedisConfig", "RetryConfig", "SemanticCacheConfig",
    "ServerConfig", "SessionConfig", "build_config", "check_ranges", "config_depth", "default_global_path",
    "describe_schema", "ENV_ALIASES", "env_layer", "merge_layers", "parse_config_text", "parse_duration", "parse_size",
    "read_file_layer", "to_builtins", "unknown_keys",
]
