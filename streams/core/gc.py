"""The server process's garbage collector: thresholds, a freeze after start-up, and full
collections on a clock from one owned thread (GC_THRESHOLDS, GC_FULL_COLLECT_INTERVAL,
GC_DEEP_COLLECT_INTERVAL; measured in docs/benchmarks.md (j))."""

from __future__ import annotations

import gc
import logging
import threading
import time

from django.conf import settings

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
