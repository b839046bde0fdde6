"""Per-event-loop Redis resources: both pools, the registry and the live hub.

redis-py's asyncio connections belong to the loop that opened them, and Django, pytest and
management commands each make loops of their own, so nothing is created at import time: the
first use on a loop builds that loop's ``RedisContext``; ``close_redis_context()`` (server
shutdown, end of a command or test) stops its tasks and closes its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass

from django.conf import settings

from monitoring.prometheus import MULTIPROCESS, LiveStateSampler
from streams.batching import ScriptBatcher
from streams.broadcast import DeletionFeed
from streams.hub import StreamHub
from streams.pool import BlockingClientPool, ClientPool, PoolLimits
from streams.registry import StreamRegistry
from streams.topology import ensure_supported
from streamsite.envconfig import RedisConfig


@dataclass
class RedisContext:
    config: RedisConfig
    main: ClientPool
    blocking: BlockingClientPool
    registry: StreamRegistry
    hub: StreamHub
    deletions: DeletionFeed
    publishes: ScriptBatcher
    started: asyncio.Future
    # With several server processes: this context's live readings for /metrics (monitoring).
    sampler: "LiveStateSampler | None" = None

    def live_hub(self) -> StreamHub:
        """The hub, with its cross-process deletion feed running."""
        self.deletions.start()
        return self.hub

    async def close(self) -> None:
        """End listeners, stop every task, close every connection."""
        await self.hub.close()
        await self.deletions.close()
        await self.registry.close()
        await self.publishes.close()
        if self.sampler is not None:
            await self.sampler.close()
        await asyncio.gather(self.main.close(), self.blocking.close())


_contexts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisContext] = (
    weakref.WeakKeyDictionary()
)


def build_context(config: RedisConfig) -> RedisContext:
    main = ClientPool(
        config.url,
        PoolLimits(
            min=config.pool_min,
            max=config.pool_max,
            acquire_timeout_ms=config.pool_acquire_timeout_ms,
            idle_timeout_ms=config.pool_idle_timeout_ms,
            health_check_interval_ms=config.pool_health_check_interval_ms,
        ),
        name="main",
    )
    blocking = BlockingClientPool(
        config.url,
        PoolLimits(
            min=config.blocking_pool_min,
            max=config.blocking_pool_max,
            acquire_timeout_ms=config.blocking_pool_acquire_timeout_ms,
            idle_timeout_ms=config.blocking_pool_idle_timeout_ms,
            health_check_interval_ms=config.pool_health_check_interval_ms,
        ),
        name="blocking",
    )
    registry = StreamRegistry(pool=main, config=config)
    hub = StreamHub(
        main=main,
        blocking=blocking,
        prefix=config.stream_key_prefix,
        keys_per_reader=settings.STREAM_HUB_KEYS_PER_READER,
        queue_size=settings.SSE_QUEUE_SIZE,
    )
    started = asyncio.get_running_loop().create_future()
    return RedisContext(
        config=config,
        main=main,
        blocking=blocking,
        registry=registry,
        hub=hub,
        deletions=DeletionFeed(hub, url=config.url, prefix=config.stream_key_prefix),
        publishes=ScriptBatcher(main),
        started=started,
    )


async def redis_context() -> RedisContext:
    """This loop's Redis resources, started on first use."""
    loop = asyncio.get_running_loop()
    ctx = _contexts.get(loop)
    if ctx is None:
        await ensure_supported(settings.REDIS)  # a Redis Cluster node is refused, by name
        ctx = _contexts.get(loop)
    if ctx is None:
        ctx = _contexts[loop] = build_context(settings.REDIS)
        try:
            await asyncio.gather(ctx.main.start(), ctx.blocking.start())
            ctx.registry.start()
            if MULTIPROCESS:
                ctx.sampler = LiveStateSampler(ctx)
                ctx.sampler.start()
        finally:
            ctx.started.set_result(None)
    elif not ctx.started.done():
        await asyncio.shield(ctx.started)
    return ctx


def all_contexts() -> list[RedisContext]:
    """Every live context in this process (for stats read from any thread)."""
    return list(_contexts.values())


def current_context() -> RedisContext | None:
    """This loop's context if one was built (for stats; builds nothing)."""
    try:
        return _contexts.get(asyncio.get_running_loop())
    except RuntimeError:
        return None


async def close_redis_context() -> None:
    """Stop this loop's tasks and close its connections. Safe to call when none exists."""
    ctx = _contexts.pop(asyncio.get_running_loop(), None)
    if ctx is not None:
        await ctx.close()


@contextlib.contextmanager
def redis_errors_as_command_errors():
    """In a management command: a Redis that is down or cannot be served (a cluster node,
    streams/topology.py) ends the command with its reason instead of a traceback."""
    from django.core.management.base import CommandError
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError as exc:
        raise CommandError(f"redis unavailable: {exc}") from None
