"""Per-event-loop Redis resources: the node map (pools per Redis node), the registry, the live hub.

redis-py's asyncio connections belong to the loop that opened them, and Django, pytest and
management commands each make loops of their own, so nothing is created at import time: the
first use on a loop builds that loop's ``RedisContext``; ``close_redis_context()`` (server
shutdown, end of a command or test) stops its tasks and closes its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings

from monitoring.prometheus import MULTIPROCESS, LiveStateSampler
from streams.broadcast import DeletionFeed
from streams.hub import StreamHub
from streams.nodes import NodeMap
from streams.registry import StreamRegistry
from streams.topology import cluster_mode
from streamsite.envconfig import RedisConfig

if TYPE_CHECKING:
    from streams.live import MetaCache
    from streams.live_metrics import MetricsBoard


@dataclass
class RedisContext:
    config: RedisConfig
    nodes: NodeMap
    registry: StreamRegistry
    hub: StreamHub
    deletions: DeletionFeed
    started: asyncio.Future
    # With several server processes: this context's live readings for /metrics (monitoring).
    sampler: "LiveStateSampler | None" = None
    # Live ride metrics: one tracker per viewed stream (streams/live_metrics.py).
    metrics: "MetricsBoard" = field(default_factory=lambda: _metrics_board())
    # Stream metadata for access re-checks and live metrics (streams/live.py).
    meta: "MetaCache" = field(default_factory=lambda: _meta_cache())

    def streams_changed(self, names: list[str]) -> None:
        """A write through this process created, deleted or re-owned these streams, or changed
        their settings: the caches built on them read again (other processes' within an
        interval: registry and metadata refresh on their own)."""
        self.registry.forget_cache()
        self.meta.forget(names)

    def live_hub(self) -> StreamHub:
        """The hub, with its cross-process deletion feed running."""
        self.deletions.start()
        return self.hub

    async def close(self) -> None:
        """End listeners, stop every task, close every connection."""
        await self.metrics.close()
        await self.hub.close()
        await self.deletions.close()
        await self.registry.close()
        if self.sampler is not None:
            await self.sampler.close()
        await self.nodes.close()


def _meta_cache() -> "MetaCache":
    from streams.live import MetaCache  # streams.live imports this module

    return MetaCache()


def _metrics_board() -> "MetricsBoard":
    from streams.live_metrics import MetricsBoard  # imports streams.live, which imports this module

    return MetricsBoard()


_contexts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisContext] = (
    weakref.WeakKeyDictionary()
)


def build_context(config: RedisConfig, *, cluster: bool) -> RedisContext:
    nodes = NodeMap(config, cluster=cluster)
    hub = StreamHub(
        nodes=nodes,
        keys=config.keys,
        keys_per_reader=settings.STREAM_HUB_KEYS_PER_READER,
        queue_size=settings.SSE_QUEUE_SIZE,
    )
    return RedisContext(
        config=config,
        nodes=nodes,
        registry=StreamRegistry(nodes=nodes, config=config),
        hub=hub,
        deletions=DeletionFeed(hub, nodes=nodes, key=config.keys.events),
        started=asyncio.get_running_loop().create_future(),
    )


async def redis_context() -> RedisContext:
    """This loop's Redis resources, started on first use."""
    loop = asyncio.get_running_loop()
    ctx = _contexts.get(loop)
    if ctx is None:
        cluster = await cluster_mode(settings.REDIS)  # standalone or cluster; a contradiction is refused
        ctx = _contexts.get(loop)
    if ctx is None:
        ctx = _contexts[loop] = build_context(settings.REDIS, cluster=cluster)
        try:
            await ctx.nodes.start()
            ctx.registry.start()
            if MULTIPROCESS:
                ctx.sampler = LiveStateSampler(ctx)
                ctx.sampler.start()
        except BaseException:
            _contexts.pop(loop, None)  # the next use tries again (a cluster map not readable yet)
            await ctx.close()
            raise
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
