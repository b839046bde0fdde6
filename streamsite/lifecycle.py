"""Graceful shutdown under daphne (Twisted triggers) and ASGI servers with lifespan (uvicorn).

On stop: the hub ends every live listener with ``event: shutdown`` (clients reconnect to
another process with Last-Event-ID), waits briefly for them to finish, then hub readers are
cancelled and awaited and both Redis pools and the Channels layer's connections are closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import threading

from django.conf import settings

from streams.clients import close_redis_context, current_context

log = logging.getLogger("streamsite")


def tune_gc() -> None:
    """Apply GC_THRESHOLDS and freeze what start-up built.

    With 10,000 open streams the heap holds millions of objects and a full (generation 2)
    collection takes ~1.3 s on this class of machine; with Python's default thresholds it ran
    every 4-14 s and every listener stalled meanwhile (p95 delivery latency 0.5-2 s). Larger
    thresholds make full collections rare; ``gc.freeze()`` keeps the start-up objects
    (Django, libraries) out of every collection. See docs/benchmarks.md.
    """
    thresholds = settings.GC_THRESHOLDS
    if thresholds:
        gc.set_threshold(*thresholds)
    gc.freeze()


def begin_shutdown() -> None:
    ctx = current_context()
    if ctx is not None:
        ctx.hub.begin_shutdown()


async def drain_listeners() -> None:
    ctx = current_context()
    if ctx is not None and not await ctx.hub.drain(settings.SHUTDOWN_GRACE_MS / 1000):
        log.warning("shutdown: %d listeners still open after the grace period", ctx.hub.stats().listeners)


async def close_everything() -> None:
    await close_redis_context()
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is not None and hasattr(layer, "close_pools"):
        await layer.close_pools()
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
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    def before() -> defer.Deferred:
        begin_shutdown()  # now, before daphne's own trigger cancels the applications
        d = defer.Deferred.fromFuture(asyncio.ensure_future(finish_shutdown()))
        d.addErrback(lambda failure: log.error("shutdown failed: %s", failure.getTraceback()))
        return d

    reactor.addSystemEventTrigger("before", "shutdown", before)


def chain_stop_signals() -> None:
    """Under lifespan servers (uvicorn): on SIGTERM/SIGINT, tell listeners first.

    uvicorn answers a stop signal by waiting for open responses to finish, and only then
    sends ``lifespan.shutdown`` — an SSE stream never finishes by itself, so without this
    every listener was cut off at ``--timeout-graceful-shutdown`` instead of getting
    ``event: shutdown``. We wrap the server's own handler (still called, unchanged): the hub
    starts ending listeners at once, their responses finish, and the server proceeds."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # the server does not handle it: its default behaviour stays

        def on_stop(signum, frame, previous=previous):
            loop.call_soon_threadsafe(begin_shutdown)
            previous(signum, frame)

        signal.signal(sig, on_stop)


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
