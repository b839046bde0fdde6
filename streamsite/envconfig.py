"""Typed, strict reads of the environment.

django-environ does the reading and casting; these wrappers make a bad value stop start-up
with the variable's name and value instead of a bare ``ValueError`` (or, for booleans, a
silent ``False``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from streams.keys import KeyLayout
from streams.pool import PoolLimits

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_int(env: environ.Env, name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.str(name, default=str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a valid integer") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be >= {minimum}")
    return value


def env_bool(env: environ.Env, name: str, default: bool) -> bool:
    raw = env.str(name, default="").strip().lower()
    if raw == "":
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_choice(env: environ.Env, name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.str(name, default=default).strip().lower()
    if raw not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class RedisConfig:
    """Every Redis knob, in the units the environment uses (milliseconds)."""

    url: str
    pool_min: int
    pool_max: int
    pool_acquire_timeout_ms: int
    pool_idle_timeout_ms: int
    pool_health_check_interval_ms: int
    blocking_pool_min: int
    blocking_pool_max: int
    blocking_pool_acquire_timeout_ms: int
    blocking_pool_idle_timeout_ms: int
    registry_refresh_interval_ms: int
    registry_cache_expiry_ms: int
    stream_key_prefix: str
    stream_maxlen: int
    cluster: str = "auto"  # REDIS_CLUSTER: auto | true | false
    cluster_nodes: tuple[str, ...] = ()  # REDIS_CLUSTER_NODES: extra seed nodes, host:port
    buckets: int = 16  # REDIS_BUCKETS: fixed for the life of the data (streams/keys.py)

    @cached_property
    def keys(self) -> KeyLayout:
        """Where every key lives (streams/keys.py)."""
        return KeyLayout(self.stream_key_prefix, self.buckets)

    @property
    def main_pool_limits(self) -> PoolLimits:
        return PoolLimits(
            min=self.pool_min, max=self.pool_max, acquire_timeout_ms=self.pool_acquire_timeout_ms,
            idle_timeout_ms=self.pool_idle_timeout_ms, health_check_interval_ms=self.pool_health_check_interval_ms,
        )

    @property
    def blocking_pool_limits(self) -> PoolLimits:
        return PoolLimits(
            min=self.blocking_pool_min, max=self.blocking_pool_max,
            acquire_timeout_ms=self.blocking_pool_acquire_timeout_ms,
            idle_timeout_ms=self.blocking_pool_idle_timeout_ms,
            health_check_interval_ms=self.pool_health_check_interval_ms,
        )

    def summary(self) -> dict:
        """The effective configuration with any password in the URL redacted."""
        return {
            "url": redact_url(self.url),
            "main_pool": asdict(self.main_pool_limits),
            "blocking_pool": asdict(self.blocking_pool_limits),
            "registry": {
                "refresh_interval_ms": self.registry_refresh_interval_ms,
                "cache_expiry_ms": self.registry_cache_expiry_ms,
            },
            "stream_key_prefix": self.stream_key_prefix,
            "stream_maxlen": self.stream_maxlen,
            "cluster": self.cluster,
            "cluster_nodes": list(self.cluster_nodes),
            "buckets": self.buckets,
        }


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:<redacted>@{host}"))


def cluster_nodes(raw: str) -> tuple[str, ...]:
    """``host:port,host:port`` (spaces allowed); each port 1-65535."""
    nodes = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(f"REDIS_CLUSTER_NODES: {item!r} is not host:port (e.g. 10.0.0.5:6379)")
        nodes.append(item)
    return tuple(nodes)


def load_redis_config(env: environ.Env) -> RedisConfig:
    url = env.str("REDIS_URL", default="redis://localhost:6379").strip()
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(
            f"REDIS_URL={redact_url(url)!r} must start with redis://, rediss:// or unix://"
        )
    config = RedisConfig(
        url=url,
        pool_min=env_int(env, "REDIS_POOL_MIN", 2),
        pool_max=env_int(env, "REDIS_POOL_MAX", 10, minimum=1),
        pool_acquire_timeout_ms=env_int(env, "REDIS_POOL_ACQUIRE_TIMEOUT", 5000),
        pool_idle_timeout_ms=env_int(env, "REDIS_POOL_IDLE_TIMEOUT", 30000),
        pool_health_check_interval_ms=env_int(env, "REDIS_POOL_HEALTH_CHECK_INTERVAL", 15000),
        blocking_pool_min=env_int(env, "REDIS_BLOCKING_POOL_MIN", 5),
        blocking_pool_max=env_int(env, "REDIS_BLOCKING_POOL_MAX", 50, minimum=1),
        blocking_pool_acquire_timeout_ms=env_int(env, "REDIS_BLOCKING_POOL_ACQUIRE_TIMEOUT", 5000),
        blocking_pool_idle_timeout_ms=env_int(env, "REDIS_BLOCKING_POOL_IDLE_TIMEOUT", 60000),
        registry_refresh_interval_ms=env_int(env, "REDIS_REGISTRY_REFRESH_INTERVAL", 30000, minimum=1),
        registry_cache_expiry_ms=env_int(env, "REDIS_REGISTRY_CACHE_EXPIRY", 60000),
        stream_key_prefix=env.str("STREAM_KEY_PREFIX", default="stream:"),
        stream_maxlen=env_int(env, "STREAM_MAXLEN", 100000),
        cluster=env_choice(env, "REDIS_CLUSTER", "auto", ("auto", "true", "false")),
        cluster_nodes=cluster_nodes(env.str("REDIS_CLUSTER_NODES", default="")),
        buckets=env_int(env, "REDIS_BUCKETS", 16, minimum=1),
    )
    if config.buckets > 16384:
        raise ImproperlyConfigured(f"REDIS_BUCKETS={config.buckets} must be <= 16384 (a Redis Cluster's slots)")
    for low, high in (("POOL_MIN", "POOL_MAX"), ("BLOCKING_POOL_MIN", "BLOCKING_POOL_MAX")):
        lo = getattr(config, low.lower())
        hi = getattr(config, high.lower())
        if lo > hi:
            raise ImproperlyConfigured(
                f"REDIS_{low}={lo} is greater than REDIS_{high}={hi}"
            )
    if not config.stream_key_prefix:
        raise ImproperlyConfigured("STREAM_KEY_PREFIX='' must not be empty")
    if "{" in config.stream_key_prefix or "}" in config.stream_key_prefix:
        raise ImproperlyConfigured(
            f"STREAM_KEY_PREFIX={config.stream_key_prefix!r} must not contain {{ or }} (the buckets' hash tags follow it)"
        )
    return config
