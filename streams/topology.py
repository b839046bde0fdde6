"""Which kind of Redis ``REDIS_URL`` names, checked before the service uses it.

``REDIS_CLUSTER`` is ``auto`` (ask the node: ``INFO cluster``), ``true`` or ``false``. This
version serves a standalone Redis (or a Sentinel-managed primary) only: the cluster key layout
and readers are designed (docs/architecture.md, "Scale-out on Redis Cluster") but not built. A
cluster node used as if it were standalone answered 500 to most follows (keys on other
nodes), so instead the server refuses to start (``check_at_start_up``) and a management
command or request refuses to use it (``ensure_supported``), each with a message naming
``REDIS_CLUSTER``. An unreachable Redis is not decided here: the pools report it as before.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import ConnectionError as RedisConnectionError

from streamsite.envconfig import RedisConfig, redact_url

PROBE_TIMEOUT_S = 0.5  # short: a Redis that hangs must not delay readiness; no answer = no verdict


class UnsupportedTopology(RedisConnectionError):
    """The configured Redis cannot be served (a 503 to API callers, with this detail)."""


def verdict(config: RedisConfig, cluster_enabled: bool) -> str | None:
    """Why ``config`` cannot be served when its node reports ``cluster_enabled``; None if it can."""
    url = redact_url(config.url)
    if config.cluster == "true":
        return (
            "REDIS_CLUSTER=true: this version serves a standalone Redis only (Redis Cluster support is "
            "designed in docs/architecture.md but not built); set REDIS_CLUSTER=auto or false and point "
            "REDIS_URL at a standalone Redis"
        )
    if cluster_enabled and config.cluster == "false":
        return f"REDIS_CLUSTER=false, but REDIS_URL={url} is a Redis Cluster node (cluster_enabled:1)"
    if cluster_enabled:
        return (
            f"REDIS_URL={url} is a Redis Cluster node (REDIS_CLUSTER=auto asked it), and this version serves "
            "a standalone Redis only: a stream's keys and the registry would live on different nodes. "
            "Point REDIS_URL at a standalone Redis"
        )
    return None


def _enabled(info: dict) -> bool:
    return str(info.get("cluster_enabled", "0")) == "1"


def _without_asking(config: RedisConfig) -> str | None:
    """The verdict that needs no probe (``REDIS_CLUSTER=true``)."""
    return verdict(config, False) if config.cluster == "true" else None


_supported: set[str] = set()  # URLs found servable in this process


def check_at_start_up(config: RedisConfig) -> None:
    """Stop start-up (``ImproperlyConfigured``) when the Redis cannot be served."""
    problem = _without_asking(config)
    if problem is None:
        try:
            client = redis.Redis.from_url(
                config.url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
            )
            try:
                problem = verdict(config, _enabled(client.info("cluster")))
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return  # unreachable now: decided on first use
    if problem:
        raise ImproperlyConfigured(problem)
    _supported.add(config.url)  # the first request need not ask again


async def ensure_supported(config: RedisConfig) -> None:
    """Raise ``UnsupportedTopology`` when the Redis cannot be served (once per URL when it can)."""
    if config.url in _supported:
        return
    problem = _without_asking(config)
    if problem is None:
        client = aioredis.Redis.from_url(
            config.url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
        )
        try:
            problem = verdict(config, _enabled(await client.info("cluster")))
        except (redis.RedisError, OSError):
            return  # unreachable: the pools report it
        finally:
            await client.aclose()
    if problem:
        raise UnsupportedTopology(problem)
    _supported.add(config.url)
