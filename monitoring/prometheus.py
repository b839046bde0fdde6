"""Our Prometheus collectors, beside django-prometheus' own in the default registry.

Counters and histograms are updated where things happen (streams/core/instruments.py); pool, hub and registry gauges are
read from live state at scrape time by a collector (so they are never stale). With several
server processes (``PROMETHEUS_MULTIPROC_DIR``) a sampler per process writes the same readings
into prometheus_client's shared files instead, so a scrape of any process sums them all.
"""

from __future__ import annotations

import asyncio
import os

from django.conf import settings
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streams.core.aio import cancel_and_wait
from streams.engine.context import all_contexts
from streams.live.capacity import connections
from streams.live.hub import HubStats, StreamHub
from streams.store.registry import StreamRegistry
from workouts.rides.tracking import MetricsBoard

ProcessReading = tuple[str, str, str, tuple[str, ...], dict[tuple[str, ...], float]]


def process_readings(contexts) -> list[ProcessReading]:
    """(name, help, kind, label names, {label values: value}) of pools, hub, capacity and
    registry over ``contexts`` — what both the scrape-time collector and the multi-process
    sampler export."""
    pools: dict[tuple[str, ...], float] = {}
    for pool_name in ("main", "blocking"):
        for state in ("total", "in_use", "available", "waiting"):
            pools[(pool_name, state)] = sum(getattr(ctx.nodes.stats(pool_name), state) for ctx in contexts)
    readings: list[ProcessReading] = [
        ("streamsite_redis_pool_connections", "Redis pool connections by state", "gauge", ("pool", "state"), pools),
    ]
    hub_stats = [hub.stats() if (hub := ctx.peek(StreamHub)) else HubStats() for ctx in contexts]
    for field, help_text in (("listeners", "Live listeners (SSE and WebSocket)"),
                             ("keys", "Streams the hub reads"), ("readers", "Hub reader tasks")):
        readings.append((f"streamsite_hub_{field}", help_text, "gauge", (),
                         {(): sum(getattr(s, field) for s in hub_stats)}))
    for field, name, help_text in (
        ("events_delivered", "streamsite_hub_events_delivered", "Entries queued to listeners"),
        ("overflow_disconnects", "streamsite_hub_overflow_disconnects", "Listeners ended for reading too slowly"),
        ("reconnects", "streamsite_hub_reader_reconnects", "Hub reader reconnects to Redis"),
        ("rehomes", "streamsite_hub_reader_rehomes", "Hub readers that followed their slot to another node"),
    ):
        readings.append((name, help_text, "counter", (), {(): sum(getattr(s, field) for s in hub_stats)}))
    readings.append(("streamsite_redis_nodes", "Redis primaries this process uses (1 on a standalone Redis)",
                     "gauge-max", (), {(): max((len(ctx.nodes.nodes()) for ctx in contexts), default=0)}))
    readings.append(("streamsite_redis_redirects", "Commands re-sent after MOVED, ASK, TRYAGAIN or a dropped "
                     "connection on a Redis Cluster", "counter", (), {(): sum(ctx.nodes.redirects for ctx in contexts)}))
    boards = [board.stats() if (board := ctx.peek(MetricsBoard)) else MetricsBoard.EMPTY for ctx in contexts]
    readings.append(("streamsite_live_metrics_streams", "Streams whose live ride metrics this process computes",
                     "gauge", (), {(): sum(b["streams"] for b in boards)}))
    readings.append(("streamsite_live_metrics_viewers", "Viewers of live ride metrics (pages, SSE, requests)",
                     "gauge", (), {(): sum(b["viewers"] for b in boards)}))
    readings.append(("streamsite_live_connections", "Open live connections counted against "
                     "LIVE_MAX_CONNECTIONS_PER_USER", "gauge", (), {(): connections.stats()["connections"]}))
    readings.append(("streamsite_live_followed_streams_limit", "LIVE_MAX_FOLLOWED_STREAMS", "gauge-max", (),
                     {(): settings.LIVE_MAX_FOLLOWED_STREAMS}))
    sizes = [len(StreamRegistry.of(ctx).cached_names) for ctx in contexts]
    readings.append(("streamsite_registry_streams", "Streams in the registry (in-process copy)", "gauge-max", (),
                     {(): max(sizes) if sizes else 0}))
    return readings


class ProcessStateCollector:
    """Pools, hub and registry of every Redis context in this process, read at scrape time."""

    def collect(self):
        for name, help_text, kind, labels, values in process_readings(all_contexts()):
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_text, labels=labels)
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family


MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
SAMPLE_INTERVAL_S = 5.0
_sampled_metrics: dict[str, Counter | Gauge] = {}


def _sampled_metric(name: str, help_text: str, kind: str, labels: tuple[str, ...]):
    """The multi-process metric for a reading (made once; not in the default registry, whose
    collector exports the same names in single-process mode)."""
    metric = _sampled_metrics.get(name)
    if metric is None:
        if kind == "counter":
            metric = Counter(name, help_text, labels, registry=None)
        else:
            mode = "livemax" if kind == "gauge-max" else "livesum"
            metric = Gauge(name, help_text, labels, registry=None, multiprocess_mode=mode)
        metric = _sampled_metrics[name] = metric
    return metric


class ProcessStateSampler:
    """With several server processes (``PROMETHEUS_MULTIPROC_DIR``): writes one context's live
    readings into prometheus_client's shared files every SAMPLE_INTERVAL_S (and when this
    process answers a scrape), so ``/metrics`` sums pools, listeners and streams over every
    process (gauges ``livesum``; counters by their increase since the last sample). Owned by
    its ``RedisContext`` (``ProcessStateSampler.of(ctx)``, started with the context: monitoring/apps.py): ``start()`` with it, ``close()`` cancels and awaits the task."""

    @classmethod
    def of(cls, ctx) -> "ProcessStateSampler":
        return ctx.part(cls, lambda: cls._made_for(ctx))

    @classmethod
    def _made_for(cls, ctx) -> "ProcessStateSampler":
        sampler = cls(ctx)
        ctx.on_close(sampler.close)
        return sampler

    def __init__(self, ctx) -> None:
        self._ctx = ctx
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-sampler")

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        for name, help_text, kind, labels, values in process_readings([self._ctx]):
            metric = _sampled_metric(name, help_text, kind, labels)
            for label_values, value in values.items():
                child = metric.labels(*label_values) if labels else metric
                if kind == "counter":
                    key = (name, label_values)
                    increase = value - self._last.get(key, 0)
                    self._last[key] = value
                    if increase > 0:
                        child.inc(increase)
                else:
                    child.set(value)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


_registered = False


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(ProcessStateCollector())
        _registered = True
