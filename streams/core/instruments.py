"""Instruments: operation timings (``timed``) and our Prometheus counters, in a leaf module
that the code which counts imports and monitoring only reads.

Operation timings, also exported to Prometheus:

Per operation name: count, total, min, max and average over every call; p95 over the most
recent ``MONITORING_RECENT_SAMPLES`` calls (nearest-rank: the value at ceil(0.95 n) - 1 of the
sorted window). Milliseconds. ``timed("name")`` works as a decorator on sync and async
functions and as a context manager (``with`` / ``async with``); a call that raises is timed too.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
OPERATION_SECONDS = Histogram(
    "streamsite_operation_seconds", "Duration of Redis and service operations", ["operation"], buckets=LATENCY_BUCKETS
)
DEFAULT_RECENT = 100

# Counted where things happen; read by monitoring (monitoring/prometheus.py, /metrics).
EVENTS_PUBLISHED = Counter("streamsite_events_published", "Stream entries published through our services")
# A publish (REST call or WebSocket frame) or stream creation refused: reason "rate"
# (PUBLISH_RATE_PER_TOKEN), "streams_per_user" (STREAMS_MAX_PER_USER), "storage_full" (Redis maxmemory).
PUBLISHES_REFUSED = Counter(
    "streamsite_publishes_refused", "Publishes and stream creations refused, by reason", ["reason"]
)
for _reason in ("rate", "streams_per_user", "storage_full"):
    PUBLISHES_REFUSED.labels(reason=_reason)  # exported at 0 from the start: alerts see the series
# PUBLISH_DURABILITY=replicated: a publish (REST call or WebSocket frame) written on the primary
# that no replica confirmed within PUBLISH_REPLICA_TIMEOUT_MS (answered 503 with its ids).
PUBLISHES_UNREPLICATED = Counter(
    "streamsite_publishes_unreplicated", "Publishes written on the primary but not confirmed by a replica in time"
)
# Answered 503 because the process is near its file descriptor limit (streams/core/descriptors.py):
# "follow" (a new follow past limit - FD_RESERVE), "edge" (a request past half the reserve),
# "error" (a request that failed for want of a descriptor: EMFILE).
DESCRIPTOR_REFUSALS = Counter(
    "streamsite_descriptor_refusals", "Requests answered 503 for want of file descriptors, by where", ["where"]
)
for _where in ("follow", "edge", "error"):
    DESCRIPTOR_REFUSALS.labels(where=_where)
SSE_OPEN = Gauge("streamsite_sse_connections", "Open SSE connections", multiprocess_mode="livesum")
SSE_DURATION = Histogram(
    "streamsite_sse_connection_seconds", "How long SSE connections stayed open",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600),
)
# Set at each scrape (monitoring/views.py): 0 when a Redis primary does not answer PING or a
# cluster does not serve every slot. With several processes, the lowest live value.
REDIS_UP = Gauge("streamsite_redis_up", "1 when every Redis primary answered PING at the last scrape",
                 multiprocess_mode="livemin")


@dataclass(frozen=True)
class OperationStats:
    name: str
    count: int
    total_ms: float
    min_ms: float
    max_ms: float
    avg_ms: float
    p95_ms: float

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class _Operation:
    __slots__ = ("count", "total", "min", "max", "recent")

    def __init__(self, recent: int) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0
        self.recent: deque[float] = deque(maxlen=recent)


def p95(values) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)]


class OperationTimings:
    def __init__(self, recent: int = DEFAULT_RECENT) -> None:
        self.recent = recent
        self._ops: dict[str, _Operation] = {}
        self._lock = threading.Lock()  # sync code may record from worker threads

    def record(self, name: str, ms: float) -> None:
        with self._lock:
            op = self._ops.get(name)
            if op is None:
                op = self._ops[name] = _Operation(self.recent)
            op.count += 1
            op.total += ms
            op.min = min(op.min, ms)
            op.max = max(op.max, ms)
            op.recent.append(ms)
        OPERATION_SECONDS.labels(name).observe(ms / 1000)

    def snapshot(self) -> list[OperationStats]:
        with self._lock:
            items = [(name, op.count, op.total, op.min, op.max, list(op.recent)) for name, op in self._ops.items()]
        return [
            OperationStats(name, count, total, mn, mx, total / count, p95(recent))
            for name, count, total, mn, mx, recent in sorted(items)
        ]

    def clear(self) -> None:
        with self._lock:
            self._ops.clear()


def _recent_from_settings() -> int:
    try:
        from django.conf import settings

        return settings.MONITORING_RECENT_SAMPLES
    except Exception:  # outside Django (pure tools, benchmarks)
        return DEFAULT_RECENT


class _LazyTimings:
    """The process-wide collector, created on first use (after settings are loaded)."""

    _instance: OperationTimings | None = None

    def get(self) -> OperationTimings:
        if self._instance is None:
            self._instance = OperationTimings(_recent_from_settings())
        return self._instance


_metrics = _LazyTimings()


def operation_timings() -> OperationTimings:
    return _metrics.get()


class timed:
    """Time a block or a function under ``name``: ``@timed("publish")``, ``with timed("x"):``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._start = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        operation_timings().record(self.name, (time.perf_counter() - self._start) * 1000)
        return False

    async def __aenter__(self):
        return self.__enter__()

    async def __aexit__(self, *exc):
        return self.__exit__(*exc)

    def __call__(self, fn):
        name = self.name
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    operation_timings().record(name, (time.perf_counter() - start) * 1000)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                operation_timings().record(name, (time.perf_counter() - start) * 1000)

        return wrapper
