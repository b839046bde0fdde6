"""Every Redis knob, read once from the environment: ``RedisConfig`` and the pools' ``PoolLimits``.

Plain values only (no connection, no metric), so the settings can import this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from streams.core.env import env_choice, env_int, redact_url


@dataclass(frozen=True)
class PoolLimits:
    min: int
    max: int
    acquire_timeout_ms: int
    idle_timeout_ms: int
    health_check_interval_ms: int = 15000


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
    buckets: int = 16  # REDIS_BUCKETS: fixed for the life of the data (streams/store/keys.py)
    publish_durability: str = "primary"  # PUBLISH_DURABILITY: primary | replicated
    publish_replica_timeout_ms: int = 1000  # PUBLISH_REPLICA_TIMEOUT_MS: WAIT's timeout

    @property
    def replica_wait_ms(self) -> int | None:
        """How long a publish pipeline waits for one replica (``WAIT 1 <ms>``); None: it does not."""
        return self.publish_replica_timeout_ms if self.publish_durability == "replicated" else None

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
            "publish_durability": self.publish_durability,
            "publish_replica_timeout_ms": self.publish_replica_timeout_ms,
        }


# primary: a publish is acknowledged once the primary wrote it (Redis replicates asynchronously:
# a failover can lose it). replicated: once one replica also has it (WAIT 1), else a 503 naming
# the ids written.
DURABILITIES = ("primary", "replicated")


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
        publish_durability=env_choice(env, "PUBLISH_DURABILITY", "primary", DURABILITIES),
        # Under the main pool's 5 s socket timeout (redis-py 8's default), with room for the writes.
        publish_replica_timeout_ms=env_int(env, "PUBLISH_REPLICA_TIMEOUT_MS", 1000, minimum=1, maximum=4000),
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
