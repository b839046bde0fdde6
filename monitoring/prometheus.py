"""Our Prometheus metrics, beside django-prometheus' own in the default registry.

Counters and histograms are updated where things happen; pool, hub and registry gauges are
read from live state at scrape time by a collector (so they are never stale).
"""

from __future__ import annotations

from django.conf import settings
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

EVENTS_PUBLISHED = Counter("streamsite_events_published", "Stream entries published through our services")
SSE_OPEN = Gauge("streamsite_sse_connections", "Open SSE connections", multiprocess_mode="livesum")
SSE_DURATION = Histogram(
    "streamsite_sse_connection_seconds", "How long SSE connections stayed open",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600),
)

# django-prometheus' request middleware is sync-only (a thread hop per hook per request, which
# halved API throughput); the one async middleware records this instead, for every path.
HTTP_REQUESTS = Histogram(
    "streamsite_http_request_duration_seconds",
    "Time to the response object (for SSE: to the stream's start) by method, route and status",
    labelnames=["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(request, status: int, seconds: float) -> None:
    """Labels stay bounded: the URL pattern, not the path; unknown methods folded together."""
    match = getattr(request, "resolver_match", None)
    route = match.route if match is not None and match.route else "<unmatched>"
    method = request.method if request.method in KNOWN_METHODS else "other"
    HTTP_REQUESTS.labels(method, route, str(status)).observe(seconds)


class LiveStateCollector:
    """Pools, hub and registry of every Redis context in this process, read at scrape time."""

    def collect(self):
        from streams.clients import all_contexts

        contexts = all_contexts()
        pool = GaugeMetricFamily("streamsite_redis_pool_connections", "Redis pool connections by state",
                                 labels=["pool", "state"])
        for pool_name in ("main", "blocking"):
            totals = {"total": 0, "in_use": 0, "available": 0, "waiting": 0}
            for ctx in contexts:
                stats = getattr(ctx, pool_name).stats()
                for key in totals:
                    totals[key] += getattr(stats, key)
            for state, value in totals.items():
                pool.add_metric([pool_name, state], value)
        yield pool
        hub_stats = [ctx.hub.stats() for ctx in contexts]
        for field, help_text in (("listeners", "Live listeners (SSE and WebSocket)"),
                                 ("keys", "Streams the hub reads"), ("readers", "Hub reader tasks")):
            yield GaugeMetricFamily(f"streamsite_hub_{field}", help_text, value=sum(getattr(s, field) for s in hub_stats))
        for field, name, help_text in (
            ("events_delivered", "streamsite_hub_events_delivered", "Entries queued to listeners"),
            ("overflow_disconnects", "streamsite_hub_overflow_disconnects", "Listeners ended for reading too slowly"),
            ("reconnects", "streamsite_hub_reader_reconnects", "Hub reader reconnects to Redis"),
        ):
            yield CounterMetricFamily(name, help_text, value=sum(getattr(s, field) for s in hub_stats))
        from streams.capacity import connections

        yield GaugeMetricFamily("streamsite_live_connections", "Open live connections counted against "
                                "LIVE_MAX_CONNECTIONS_PER_USER", value=connections.stats()["connections"])
        yield GaugeMetricFamily("streamsite_live_followed_streams_limit", "LIVE_MAX_FOLLOWED_STREAMS",
                                value=settings.LIVE_MAX_FOLLOWED_STREAMS)
        sizes = [len(ctx.registry.cached_names) for ctx in contexts]
        yield GaugeMetricFamily("streamsite_registry_streams", "Streams in the registry (in-process copy)",
                                value=max(sizes) if sizes else 0)


_registered = False


def register_collectors() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(LiveStateCollector())
        _registered = True
