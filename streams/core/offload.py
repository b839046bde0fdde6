"""CPU-heavy pure work in worker processes, off the event loop and off its GIL.

A thread is not enough for parsing a 32 MiB workout: ``json.loads`` holds the GIL for the
whole parse (~0.6 s), and every live listener of the process waits that long (measured:
listeners' p99 8 → 366-500 ms, docs/benchmarks.md (i)). A process has its own GIL.

One ``ProcessPoolExecutor`` per server process (``OFFLOAD_PROCESSES`` workers, default 1,
started with ``spawn`` — never ``fork`` from a process with an event loop and threads), run at
a lower CPU priority (``OFFLOAD_NICE``, default 10) so that on a busy machine the listeners'
deliveries go first. It is
created on first use, not at import, and ``shutdown()`` (called at server stop) ends it.
Workers must be given module-level functions of Django-free modules (``workouts.prepare``).
A worker that dies (killed, out of memory) fails only its own job: the pool is replaced and
the caller gets ``OffloadUnavailable`` (a 503 with a JSON detail).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from django.conf import settings

log = logging.getLogger("streamsite")

_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None


class OffloadUnavailable(RuntimeError):
    """The worker process running the job died; the job was not done (the API answers 503)."""


def _pool() -> ProcessPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ProcessPoolExecutor(
                max_workers=settings.OFFLOAD_PROCESSES, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start, initargs=(settings.OFFLOAD_NICE,),
            )
        return _executor


def _worker_start(nice: int) -> None:
    """Live delivery comes first: a worker parsing a big body yields the CPU to the server."""
    if nice:
        os.nice(nice)


def _discard(broken: ProcessPoolExecutor) -> None:
    global _executor
    with _lock:
        if _executor is broken:
            _executor = None
    broken.shutdown(wait=False, cancel_futures=True)


async def run(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a worker process; its exceptions are raised here."""
    pool = _pool()
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kwargs))
    except BrokenProcessPool:
        log.error("offload: a worker process died running %s; starting a new pool", getattr(fn, "__name__", fn))
        _discard(pool)
        raise OffloadUnavailable("the worker process preparing this request stopped; try again") from None


def shutdown() -> None:
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
