"""Health, readiness, the JSON metrics snapshot and the Prometheus endpoint (thin)."""

from __future__ import annotations

import hmac
import ipaddress
import os

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from monitoring.checks import not_ready_because, readiness, redis_up, snapshot
from monitoring.prometheus import ProcessStateSampler, register_collectors
from streams.access.identity import AccessError, parse_authorization
from streams.core.instruments import REDIS_UP
from streams.engine.context import current_context


async def health(request):
    return JsonResponse({"status": "ok"})


async def ready(request):
    ok, checks = await readiness()
    if ok:
        return JsonResponse({"status": "ok", "checks": checks})
    return JsonResponse({"status": "unavailable", "detail": not_ready_because(checks), "checks": checks}, status=503)


def _has_monitoring_token(request) -> bool:
    """Whether the request carries the MONITORING_TOKEN bearer; AccessError (401) for a
    malformed Authorization header."""
    expected = settings.MONITORING_TOKEN
    raw = parse_authorization(request.headers.get("Authorization"))
    return bool(expected) and raw is not None and hmac.compare_digest(raw.encode(), expected.encode())


async def metrics_json(request):
    """Staff session or the MONITORING_TOKEN bearer."""
    try:
        has_token = _has_monitoring_token(request)
    except AccessError as exc:
        return JsonResponse({"detail": exc.detail}, status=exc.status)
    if not has_token:
        if request.headers.get("Authorization"):
            return JsonResponse({"detail": "invalid monitoring token"}, status=403)
        user = await request.auser()
        if not user.is_authenticated:
            return JsonResponse({"detail": "authentication required: staff session or Bearer MONITORING_TOKEN"}, status=401)
        if not user.is_staff:
            return JsonResponse({"detail": "staff only"}, status=403)
    return JsonResponse(await snapshot())


# Set by streamsite/server/guards.py (TrustedProxies) on a request that came with forwarded
# headers from a peer not in TRUSTED_PROXIES.
UNTRUSTED_FORWARD = "streamsite.untrusted_forward"


def _client_allowed(request) -> bool:
    """The client, after trusted-proxy resolution, is in METRICS_ALLOWED_CIDRS. Not when the
    request came through a proxy that is not trusted (its client is unknown: the peer is the
    proxy, often in a private range), nor when the resolved client is a trusted proxy itself
    (a proxy that did not say whom it forwards for)."""
    if getattr(request, "scope", {}).get(UNTRUSTED_FORWARD):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if any(address in network for network in settings.TRUSTED_PROXIES):
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_CIDRS)


async def prometheus(request):
    """Open with DEBUG; else to a client in METRICS_ALLOWED_CIDRS (after trusted-proxy
    resolution, see ``_client_allowed``) or with the MONITORING_TOKEN bearer."""
    try:
        has_token = _has_monitoring_token(request)
    except AccessError as exc:
        return JsonResponse({"detail": exc.detail}, status=exc.status)
    if not (settings.DEBUG or _client_allowed(request) or has_token):
        return JsonResponse({"detail": "metrics are only served to allowed networks or with the monitoring token"}, status=403)
    REDIS_UP.set(1 if await redis_up() else 0)
    body = await sync_to_async(generate_latest, thread_sensitive=False)(scrape_registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def scrape_registry():
    """The default registry; with PROMETHEUS_MULTIPROC_DIR (several server processes), every
    process's files instead: counters and histograms summed, and the live gauges each
    process's sampler writes (this process's sampled now, the others' at most
    SAMPLE_INTERVAL_S old)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        register_collectors()
        return REGISTRY
    ctx = current_context()
    sampler = None if ctx is None else ctx.peek(ProcessStateSampler)
    if sampler is not None:
        sampler.sample()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
