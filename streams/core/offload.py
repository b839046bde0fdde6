"""CPU-heavy pure work in worker processes, off the event loop and off its GIL.

A thread is not enough for parsing a 32 MiB workout: ``json.loads`` holds the GIL for the
whole parse (~0.6 s), and every live listener of the process waits that long (measured:
listeners' p99 8 → 366-500 ms, docs/benchmarks.md (i)). A process has its own GIL.

One ``ProcessPoolExecutor`` per server process (``OFFLOAD_PROCESSES`` workers, default 2,
started with ``spawn`` — never ``fork`` from a process with an event loop and threads), run at
a lower CPU priority (``OFFLOAD_NICE``, default 10) so that on a busy machine the listeners'
deliveries go first. It is
created on first use, not at import, and ``shutdown()`` (called at server stop) ends it.
Workers must be given module-level functions of Django-free modules (``workouts.prepare``).
A worker that dies (killed, out of memory) fails only its own job: the pool is replaced and
the caller gets ``OffloadUnavailable`` (a 503 with a JSON detail).

Every job is bounded, so that one upload cannot hold a worker for a minute:
- CPU time: ``OFFLOAD_JOB_TIMEOUT`` (ms, default 30 s) per job, measured by the worker's
  ``ITIMER_PROF`` (user + system CPU of the job). Past it, the job stops with ``JobTooLong``
  (the API answers 422 naming the setting) and the worker goes on to the next job. A job stuck
  inside C code (where Python cannot stop it) is killed one ``JOB_KILL_GRACE_S`` later by
  ``ITIMER_VIRTUAL``, whose signal is left to its default action: the worker dies, the pool is
  replaced and the caller gets ``OffloadUnavailable``.
- Fairness: a user has at most ``OFFLOAD_JOBS_PER_USER`` (default 1) jobs in flight per server
  process (``user_job``; one more is a 429 naming the setting), and the pool has
  ``OFFLOAD_PROCESSES`` (default 2) workers: one user's slow upload takes at most one worker,
  and another user's workout runs beside it instead of waiting behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from django.conf import settings

from streams.core.errors import InvalidInput

log = logging.getLogger("streamsite")

_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None


JOB_KILL_GRACE_S = 5.0  # after OFFLOAD_JOB_TIMEOUT, a job stuck in C code is killed this much later


class OffloadUnavailable(RuntimeError):
    """The worker process running the job died; the job was not done (the API answers 503)."""


class JobTooLong(InvalidInput):
    """The job used more CPU time than OFFLOAD_JOB_TIMEOUT (raised in the worker, 422)."""

    status = 422


class OffloadBusy(InvalidInput):
    """The user already has OFFLOAD_JOBS_PER_USER jobs in flight in this process (429)."""

    status = 429


_in_flight: Counter = Counter()  # jobs per user key, this process (the event loop's thread)


@contextlib.contextmanager
def user_job(key):
    """A slot for one of ``key``'s (a user id) jobs: ``OffloadBusy`` when the user already has
    OFFLOAD_JOBS_PER_USER in flight, so one user's uploads take at most that many workers."""
    limit = settings.OFFLOAD_JOBS_PER_USER
    if _in_flight[key] >= limit:
        raise OffloadBusy(
            f"you already have {_in_flight[key]} workout(s) being prepared, the limit "
            f"(OFFLOAD_JOBS_PER_USER={limit}): wait for it to finish"
        )
    _in_flight[key] += 1
    try:
        yield
    finally:
        _in_flight[key] -= 1
        if _in_flight[key] <= 0:
            del _in_flight[key]


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
    signal.signal(signal.SIGPROF, _on_cpu_limit)
    signal.signal(signal.SIGVTALRM, signal.SIG_DFL)  # the backstop: terminates the worker


_job_limit_ms: int | None = None  # in the worker: the running job's limit (None between jobs)


class _CpuLimit(BaseException):
    """Raised into the job by SIGPROF: a BaseException, so that no ``except ValueError`` or
    ``except Exception`` of the parsing code swallows it (``_bounded`` turns it into JobTooLong)."""


def _on_cpu_limit(signum, frame) -> None:
    if _job_limit_ms is not None:
        raise _CpuLimit


def _bounded(limit_ms: int, fn, args, kwargs):
    """In the worker: ``fn(*args, **kwargs)`` under a CPU-time limit (see the module doc)."""
    global _job_limit_ms
    seconds = limit_ms / 1000
    _job_limit_ms = limit_ms
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds + JOB_KILL_GRACE_S)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        return fn(*args, **kwargs)
    except _CpuLimit:
        raise JobTooLong(
            f"preparing this workout took more than OFFLOAD_JOB_TIMEOUT ({limit_ms} ms of CPU time): "
            "send a smaller file, or split it"
        ) from None
    finally:
        _job_limit_ms = None
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)


def spin_until(path: str, *, cpu: bool = False) -> int:
    """Test hook: a job that is slow on purpose, until ``path`` exists (``cpu``: busy, using
    CPU time; else sleeping). Returns the worker's pid."""
    while not Path(path).exists():
        if not cpu:
            time.sleep(0.01)
    return os.getpid()


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
        job = functools.partial(_bounded, settings.OFFLOAD_JOB_TIMEOUT_MS, fn, args, kwargs)
        return await asyncio.get_running_loop().run_in_executor(pool, job)
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
