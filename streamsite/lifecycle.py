"""Graceful shutdown under daphne (Twisted triggers) and ASGI servers with lifespan (uvicorn).

On stop: the hub ends every live listener with ``event: shutdown`` (clients reconnect to
another process with Last-Event-ID), waits briefly for them to finish, then hub readers are
cancelled and awaited and every Redis pool is closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time

from django.conf import settings

from streams.clients import close_redis_context, current_context
from streamsite import offload
from streamsite.flow_control import StallClock
from streamsite.compat import add_twisted_shutdown_trigger
from streamsite.compat import chain_stop_signals as wrap_stop_signals

log = logging.getLogger("streamsite")


def tune_gc() -> None:
    """Apply GC_THRESHOLDS, freeze what start-up built, and start the clocked collections.

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
    if thresholds and settings.GC_FULL_COLLECT_INTERVAL_MS:
        FullCollections.start(
            settings.GC_FULL_COLLECT_INTERVAL_MS / 1000, deep_interval=settings.GC_DEEP_COLLECT_INTERVAL_MS / 1000
        )


class FullCollections:
    """Collections on a clock, from one owned thread, that stop the world only briefly.

    With our thresholds Python's automatic full collections practically never run (measured:
    none in a 30-minute churn soak), so cyclic garbage from finished connections — exception
    tracebacks, Django's per-request task pairs — would pile up (~4 MB a minute under churn).
    So every ``interval`` this thread runs ``gc.collect()`` and then ``gc.freeze()``: the
    freeze moves the survivors (the open connections' objects) to the permanent generation,
    and the next collection examines only what was made since. A full collection of every
    object took ~1.45 s at 10,000 open streams — every listener stalled that long — whereas
    these take tens of milliseconds (docs/benchmarks.md (j)).

    Refcounting frees frozen objects as usual; only a garbage *cycle* that includes frozen
    objects (a connection that closed after its objects were frozen) waits for the next *deep*
    collection: every ``deep_interval`` (0 = never) the permanent generation is unfrozen,
    collected in full — the old long pause, once per deep interval — and frozen again.
    ``stop()`` (at shutdown) ends and joins the thread."""

    _thread: threading.Thread | None = None
    _stop = threading.Event()
    ran = threading.Event()  # set after each collection (observable by tests and tools)
    runs = 0
    deep_runs = 0
    last_pause_ms: float | None = None
    last_deep_pause_ms: float | None = None

    @classmethod
    def start(cls, interval: float, deep_interval: float = 0) -> None:
        if cls._thread is not None:
            return
        cls._stop.clear()
        cls._thread = threading.Thread(
            target=cls._run, args=(interval, deep_interval), name="gc-full-collections", daemon=True
        )
        cls._thread.start()

    @classmethod
    def _run(cls, interval: float, deep_interval: float) -> None:
        last_deep = time.monotonic()
        while not cls._stop.wait(interval):
            deep = bool(deep_interval) and time.monotonic() - last_deep >= deep_interval
            cls.collect_once(deep=deep)
            if deep:
                last_deep = time.monotonic()

    @classmethod
    def collect_once(cls, *, deep: bool) -> int:
        """One clocked (or deep) collection; the number of objects freed."""
        started = time.perf_counter()
        if deep:
            gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        pause_ms = (time.perf_counter() - started) * 1000
        if deep:
            cls.deep_runs += 1
            cls.last_deep_pause_ms = pause_ms
        cls.runs += 1
        cls.last_pause_ms = pause_ms
        cls.ran.set()
        log.info("%s gc collection: %d objects freed in %.0f ms (%d frozen)",
                 "deep" if deep else "clocked", collected, pause_ms, gc.get_freeze_count())
        return collected

    @classmethod
    def stop(cls) -> None:
        thread, cls._thread = cls._thread, None
        if thread is not None:
            cls._stop.set()
            thread.join()


def begin_shutdown() -> None:
    ctx = current_context()
    if ctx is not None:
        ctx.hub.begin_shutdown()


async def drain_listeners() -> None:
    ctx = current_context()
    if ctx is not None and not await ctx.hub.drain(settings.SHUTDOWN_GRACE_MS / 1000):
        log.warning("shutdown: %d listeners still open after the grace period", ctx.hub.stats().listeners)


async def close_everything() -> None:
    FullCollections.stop()
    await StallClock.stop_all()
    await asyncio.to_thread(offload.shutdown)
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
