"""Per-event-loop Redis resources: the node map (pools per Redis node) and what higher floors
attach to it.

redis-py's asyncio connections belong to the loop that opened them, and Django, pytest and
management commands each make loops of their own, so nothing is created at import time: the
first use on a loop builds that loop's ``RedisContext``; ``close_redis_context()`` (server
shutdown, end of a command or test) stops its tasks and closes its connections.

The context knows Redis only. Higher floors keep their own per-loop objects in it (the
registry, the hub, the metadata cache, the ride trackers) with ``Thing.of(ctx)``, which calls
``ctx.part(Thing, make)`` and registers the object's ``close`` with ``ctx.on_close``; parts
close in the reverse order of their making, then the pools. Code that runs on every new
context (the registry's refresh, the metrics sampler) is registered once with
``on_context_start`` from an app's ``ready()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from django.conf import settings

from streams.engine.config import RedisConfig
from streams.engine.nodes import NodeMap
from streams.engine.topology import cluster_mode

T = TypeVar("T")
StreamsChanged = Callable[[list[str], bool], None]


class RedisContext:
    """One event loop's Redis: ``config``, ``nodes``, and the parts attached by higher floors."""

    def __init__(self, config: RedisConfig, nodes: NodeMap) -> None:
        self.config = config
        self.nodes = nodes
        self.started: asyncio.Future = asyncio.get_running_loop().create_future()
        self.origin = secrets.token_hex(8)  # tells this context's own cross-process notices apart
        self._parts: dict[type, object] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._change_hooks: list[StreamsChanged] = []

    def part(self, kind: type[T], make: Callable[[], T]) -> T:
        """This context's ``kind``, made by ``make`` on first use."""
        found = self._parts.get(kind)
        if found is None:
            found = self._parts[kind] = make()
        return found  # type: ignore[return-value]

    def peek(self, kind: type[T]) -> T | None:
        """This context's ``kind`` if one was made (for stats: makes nothing)."""
        return self._parts.get(kind)  # type: ignore[return-value]

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(close)

    def on_streams_changed(self, hook: StreamsChanged) -> None:
        """``hook(names, deleted)`` runs when a write through this process created, deleted or
        re-owned streams, or changed their settings."""
        self._change_hooks.append(hook)

    def streams_changed(self, names: list[str], *, deleted: bool = False) -> None:
        """Caches built on these streams read again, listeners of deleted ones end (other
        processes' within an interval, or through the deletion feed)."""
        for hook in self._change_hooks:
            hook(names, deleted)

    async def close(self) -> None:
        """End listeners, stop every task, close every connection."""
        while self._closers:
            await self._closers.pop()()
        await self.nodes.close()


_contexts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisContext] = (
    weakref.WeakKeyDictionary()
)
_start_hooks: list[Callable[[RedisContext], None]] = []


def on_context_start(hook: Callable[[RedisContext], None]) -> None:
    """Run ``hook(ctx)`` on every new context once its nodes answer (registered from an app's
    ``ready()``, once per process)."""
    if hook not in _start_hooks:
        _start_hooks.append(hook)


def build_context(config: RedisConfig, *, cluster: bool) -> RedisContext:
    return RedisContext(config, NodeMap(config, cluster=cluster))


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
            for hook in _start_hooks:
                hook(ctx)
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
    streams/engine/topology.py) ends the command with its reason instead of a traceback."""
    from django.core.management.base import CommandError
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError as exc:
        raise CommandError(f"redis unavailable: {exc}") from None
