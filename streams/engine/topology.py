"""Which kind of Redis ``REDIS_URL`` names: a standalone server or a node of a Redis Cluster.

``REDIS_CLUSTER`` is ``auto`` (ask the node: ``INFO cluster``), ``true`` or ``false``. The answer
decides how streams/engine/nodes.py builds its map (one node, or ``CLUSTER SLOTS``); nothing else in
the service differs. A setting that contradicts the node (``true`` on a standalone Redis,
``false`` on a cluster node) stops start-up (``check_at_start_up``) and is refused by commands
and requests (``cluster_mode`` raises ``UnsupportedTopology``: a 503 with the reason), each
with a message naming ``REDIS_CLUSTER``.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.engine.config import RedisConfig, redact_url

PROBE_TIMEOUT_S = 0.5  # short: a Redis that hangs must not delay readiness


class UnsupportedTopology(RedisConnectionError):
    """The configured Redis cannot be served as configured (a 503 to API callers, with this detail)."""


def verdict(config: RedisConfig, cluster_enabled: bool) -> str | None:
    """Why ``config`` cannot be served when its node reports ``cluster_enabled``; None if it can."""
    url = redact_url(config.url)
    if config.cluster == "false" and cluster_enabled:
        return (f"REDIS_CLUSTER=false, but REDIS_URL={url} is a Redis Cluster node (cluster_enabled:1); "
                "set REDIS_CLUSTER=auto or true")
    if config.cluster == "true" and not cluster_enabled:
        return (f"REDIS_CLUSTER=true, but REDIS_URL={url} is a standalone Redis (cluster_enabled:0); "
                "set REDIS_CLUSTER=auto or false")
    return None


def _enabled(info: dict) -> bool:
    return str(info.get("cluster_enabled", "0")) == "1"


_known: dict[tuple[str, str], bool] = {}  # (url, REDIS_CLUSTER) -> cluster mode, found in this process


def check_at_start_up(config: RedisConfig) -> None:
    """Stop start-up (``ImproperlyConfigured``) when the Redis contradicts ``REDIS_CLUSTER``.
    An unreachable Redis is not decided here: the first use reports it."""
    try:
        client = redis.Redis.from_url(config.url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S)
        try:
            enabled = _enabled(client.info("cluster"))
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return
    problem = verdict(config, enabled)
    if problem:
        raise ImproperlyConfigured(problem)
    _known[(config.url, config.cluster)] = enabled


async def cluster_mode(config: RedisConfig) -> bool:
    """Whether ``config`` names a Redis Cluster (asked once per process and URL). Raises
    ``UnsupportedTopology`` on a contradiction, a redis ``ConnectionError`` when unreachable."""
    known = _known.get((config.url, config.cluster))
    if known is not None:
        return known
    client = aioredis.Redis.from_url(config.url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S)
    try:
        enabled = _enabled(await client.info("cluster"))
    except (RedisConnectionError, OSError) as exc:
        if config.cluster == "true" and config.cluster_nodes:
            return True  # REDIS_URL's node is down: the map is read from a REDIS_CLUSTER_NODES seed
        raise RedisConnectionError(f"redis unreachable at {redact_url(config.url)}: {exc}") from None
    finally:
        await client.aclose()
    problem = verdict(config, enabled)
    if problem:
        raise UnsupportedTopology(problem)
    _known[(config.url, config.cluster)] = enabled
    return enabled
