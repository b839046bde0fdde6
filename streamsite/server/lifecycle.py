"""Graceful shutdown under daphne (Twisted triggers) and ASGI servers with lifespan (uvicorn).

On stop: the hub ends every live listener with ``event: shutdown`` (clients reconnect to
another process with Last-Event-ID), waits briefly for them to finish, then hub readers are
cancelled and awaited and every Redis pool is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os

from django.conf import settings

from streams.access.identity import identity_cache
from streams.core import offload
from streams.core.compat import add_twisted_shutdown_trigger, end_idle_request_threads
from streams.core.compat import chain_stop_signals as wrap_stop_signals
from streams.core.gc import FullCollections
from streams.engine.context import close_redis_context, current_context
from streams.live.hub import StreamHub
from streamsite.server.flow_control import StallClock

log = logging.getLogger("streamsite")


def _hub() -> StreamHub | None:
    ctx = current_context()
    return None if ctx is None else ctx.peek(StreamHub)


def begin_shutdown() -> None:
    hub = _hub()
    if hub is not None:
        hub.begin_shutdown()


async def drain_listeners() -> None:
    hub = _hub()
    if hub is not None and not await hub.drain(settings.SHUTDOWN_GRACE_MS / 1000):
        log.warning("shutdown: %d listeners still open after the grace period", hub.stats().listeners)


async def close_everything() -> None:
    FullCollections.stop()
    await StallClock.stop_all()
    await identity_cache.close()  # a database probe in flight
    await asyncio.to_thread(offload.shutdown)
    await asyncio.to_thread(end_idle_request_threads)  # their database connections closed
    await close_redis_context()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # this process's live gauges leave the sums
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
    log.info("shutdown: live listeners ended, hub stopped, Redis pools closed")


async def shutdown() -> None:
    begin_shutdown()
    await finish_shutdown()


async def finish_shutdown() -> None:
    await drain_listeners()
    await close_everything()


def install_twisted_hooks() -> None:
    """Under daphne: on SIGTERM, end listeners, then close everything.

    Both run in Twisted's "before" shutdown phase: in the "during" phase the reactor stops
    the asyncio loop first (its own ``crash`` trigger), so a coroutine started there never
    finishes. daphne's own "before" trigger cancels its application instances meanwhile;
    our listeners have already been told to end and finish their responses cleanly.
    """

    def before():
        from twisted.internet import defer

        begin_shutdown()  # now, before daphne's own trigger cancels the applications
        d = defer.Deferred.fromFuture(asyncio.ensure_future(finish_shutdown()))
        d.addErrback(lambda failure: log.error("shutdown failed: %s", failure.getTraceback()))
        return d

    add_twisted_shutdown_trigger(before)


def chain_stop_signals() -> None:
    """Under lifespan servers (uvicorn): on SIGTERM/SIGINT, tell listeners first.

    uvicorn answers a stop signal by waiting for open responses to finish, and only then
    sends ``lifespan.shutdown`` — an SSE stream never finishes by itself, so without this
    every listener was cut off at ``--timeout-graceful-shutdown`` instead of getting
    ``event: shutdown``. The server's own handler is still called, unchanged: the hub starts
    ending listeners at once, their responses finish, and the server proceeds."""
    wrap_stop_signals(begin_shutdown)


async def lifespan(scope, receive, send) -> None:
    """ASGI lifespan (uvicorn, hypercorn); daphne does not send it and uses the hooks above."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            chain_stop_signals()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
