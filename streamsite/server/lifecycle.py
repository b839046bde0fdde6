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
from streams.engine.context import close_redis_context, current_context, redis_context
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


STARTUP_REDIS_TIMEOUT_S = 5.0


async def start_redis_context() -> None:
    """This loop's Redis context at start-up, so that its background tasks (the ride janitor,
    the registry's reconcile) run before any request: a server nobody visits still ends and
    archives rides. Redis unreachable: logged, and they start with the first request that
    reaches it (the service starts without Redis)."""
    try:
        await asyncio.wait_for(redis_context(), STARTUP_REDIS_TIMEOUT_S)
    except Exception as exc:  # never fatal: the pages answer their styled 503 meanwhile
        log.warning("Redis not reachable at start-up (%s): background tasks start with the first request "
                    "that reaches it", exc)


async def lifespan(scope, receive, send) -> None:
    """ASGI lifespan (uvicorn, hypercorn); daphne does not send it and uses the hooks above
    (its Redis context, and so its ride janitor, starts with the first request)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            chain_stop_signals()
            await start_redis_context()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
