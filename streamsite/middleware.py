"""Our async-native middleware classes.

Django's own middleware (sessions, CSRF, auth, messages, …) subclasses ``MiddlewareMixin``,
which under ASGI runs every hook through ``sync_to_async``: two hops through one shared
thread per middleware per request. Measured here, that stack cut the API's throughput by more
than half. So the API, health and streaming paths are served by a second Django handler
(streamsite/server/handlers.py) whose stack is ``LEAN_MIDDLEWARE``: ``LeanGuardMiddleware`` runs the
pure, non-blocking parts of Django's stack on the event loop, then ``ApiShapeMiddleware``.
Every other path (the admin) gets Django's standard ``MIDDLEWARE``, which also starts with
``ApiShapeMiddleware``. Both stacks begin with ``PrometheusBefore`` and end with
``PrometheusAfter``: django-prometheus' own middleware hooks (pure counting, no I/O), run on
the event loop, so ``/metrics`` has its standard ``django_http_*`` families without a thread
hop per request.
"""

from __future__ import annotations

import logging

from asgiref.sync import markcoroutinefunction
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import DatabaseError
from django.http import HttpResponse, JsonResponse
from django.middleware.security import SecurityMiddleware
from django.template.loader import render_to_string
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.core.compat import (
    already_logged,
    django_middleware_hooks,
    prometheus_middleware_hooks,
)
from streams.core.database import UNREACHABLE, database_outage
from streams.core.descriptors import Tally, descriptors
from streams.engine.nodes import is_redirect
from streamsite.server.limits import body_limit, too_big
from streamsite.views import out_of_descriptors_response

log = logging.getLogger(__name__)

# Load-balancer probes and Prometheus scrapers reach a pod by its IP, which is rarely one of
# ALLOWED_HOSTS; /metrics has its own address rules (METRICS_ALLOWED_CIDRS).
HOST_CHECK_EXEMPT = ("/health/", "/metrics")


def method_not_allowed(request, original) -> JsonResponse:
    allowed = original.get("Allow", "")
    response = JsonResponse(
        {"detail": f"method {request.method} not allowed on {request.path}; allowed: {allowed}"}, status=405
    )
    response["Allow"] = allowed
    return response


class AsyncMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response):
        markcoroutinefunction(self)
        self.get_response = get_response


class ApiShapeMiddleware(AsyncMiddleware):
    """Under /api/, the body cap by Content-Length (the
    ASGI ``BodyLimit`` also counts what is actually read) and JSON 405 answers; everywhere, a
    view's EMFILE is a 503."""

    def body_too_big(self, request) -> JsonResponse | None:
        """A declared body over the path's limit (streamsite/server/limits.py)."""
        path = request.path_info
        if not path.startswith("/api/"):
            return None
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            return JsonResponse({"detail": "invalid Content-Length header"}, status=400)
        if length > body_limit(path)[0]:
            return JsonResponse({"detail": too_big(path)}, status=413)
        return None

    def process_exception(self, request, exception):
        """A view that failed for want of a file descriptor (EMFILE): 503, not 500, and no
        traceback per request (streamsite/views.py)."""
        if isinstance(exception, (OSError, DatabaseError)) and descriptors().explains(exception):
            return out_of_descriptors_response(request, exception)
        return None

    async def __call__(self, request):
        response = self.body_too_big(request) or await self.get_response(request)
        if (
            response.status_code == 405
            and request.path_info.startswith("/api/")
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            response = method_not_allowed(request, response)
        return response


class LeanGuardMiddleware(AsyncMiddleware):
    """What the lean paths keep of Django's stack, all without I/O: ALLOWED_HOSTS, the
    security headers and HTTPS redirect, X-Frame-Options, a lazy session and a lazy user, and
    on HTML responses (the live pages, Swagger UI) django-csp's Content-Security-Policy with its
    lazy nonce. Django's own middleware hooks, called here on the event loop
    (``compat.django_middleware_hooks``)."""

    def __init__(self, get_response):
        super().__init__(get_response)
        self.security = django_middleware_hooks(SecurityMiddleware, get_response)
        self.session = django_middleware_hooks(SessionMiddleware, get_response)
        self.auth = django_middleware_hooks(AuthenticationMiddleware, get_response)
        self.csp = django_middleware_hooks(CSPMiddleware, get_response)

    async def __call__(self, request):
        if not request.path_info.startswith(HOST_CHECK_EXEMPT):
            request.get_host()  # enforces ALLOWED_HOSTS (DisallowedHost → 400), as CommonMiddleware would
        response = self.security.request(request)
        if response is None:
            self.session.request(request)  # lazy: no I/O unless the session is read
            self.auth.request(request)  # lazy: request.auser() loads the user on demand
            self.csp.request(request)  # lazy: a nonce only when a page asks for one
            response = await self.get_response(request)
            if response.get("Content-Type", "").startswith("text/html"):
                response = self.csp.response(request, response)
        response = self.security.response(request, response)
        response.headers.setdefault("X-Frame-Options", settings.X_FRAME_OPTIONS)
        return response


class PrometheusHooks(AsyncMiddleware):
    """Runs a django-prometheus middleware's request and response hooks on the event loop
    (``compat.prometheus_middleware_hooks``)."""

    which = "before"

    def __init__(self, get_response):
        super().__init__(get_response)
        self.metrics = prometheus_middleware_hooks(self.which, get_response)

    async def __call__(self, request):
        self.metrics.request(request)
        response = await self.get_response(request)
        return self.metrics.response(request, response)


class PrometheusBefore(PrometheusHooks):
    """django-prometheus' ``PrometheusBeforeMiddleware`` (first in a stack): counts every
    request and times it including every middleware."""


class PrometheusAfter(PrometheusHooks):
    """django-prometheus' ``PrometheusAfterMiddleware`` (last in a stack): requests and
    responses by method, view, transport and status, latency by view, exceptions by type and
    view. ``process_view`` and ``process_template_response`` are coroutines, so Django calls
    them without a thread hop; ``process_exception`` runs in Django's exception path."""

    which = "after"

    async def process_view(self, request, view_func, view_args, view_kwargs):
        self.metrics.view(request, view_func, *view_args, **view_kwargs)

    async def process_template_response(self, request, response):
        return self.metrics.template_response(request, response)

    def process_exception(self, request, exception):
        self.metrics.exception(request, exception)


DATABASE_RETRY_AFTER_S = 5
UNAVAILABLE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable</title>
<style>body{font-family:system-ui,sans-serif;background:#f5f5f4;color:#1c1917;display:grid;place-items:center;
min-height:90vh;margin:0}main{max-width:32rem;padding:2rem;background:#fff;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.1)}h1{font-size:1.3rem;margin-top:0}p{line-height:1.5}</style></head>
<body><main><h1>Temporarily unavailable</h1><p>The database cannot be reached right now, so this page
cannot be shown. Live streams keep running. Please try again in a few seconds.</p></main></body></html>
"""


def database_unavailable(request) -> HttpResponse:
    """503 with Retry-After: JSON ``{"detail"}`` under /api/, /health/ and /metrics, a plain
    page elsewhere (the admin, its login): no template, no context processor touches the
    database again."""
    if request.path.startswith(("/api/", *HOST_CHECK_EXEMPT)):
        response = JsonResponse({"detail": "database unavailable: try again later"}, status=503)
    else:
        response = HttpResponse(UNAVAILABLE_PAGE, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return already_logged(response)


class DatabaseUnavailableMiddleware(AsyncMiddleware):
    """A view that finds the database unreachable answers 503 (``database_unavailable``), not
    500 with a traceback: counted and logged once per interval (streams/core/database.py)."""

    async def __call__(self, request):
        return await self.get_response(request)

    async def process_exception(self, request, exception):
        if not isinstance(exception, UNREACHABLE) or descriptors().explains(exception):
            return None  # out of descriptors: this process's shortage (ApiShapeMiddleware answers)
        database_outage.noticed(exception)
        return database_unavailable(request)


REDIS_RETRY_AFTER_S = 5
_redis_tally = Tally()


def redis_unavailable_page(request) -> HttpResponse:
    """The styled 503 page with ``Retry-After``: the site's (streamsite/templates/503.html), or
    in the admin's frame on its pages (templates/admin/redis_unavailable.html). Rendered
    without the request: no context processor reads the session or the database."""
    admin = request.path.startswith("/admin/")
    context = {"retry_after": REDIS_RETRY_AFTER_S, "path": request.path}
    if admin:
        from django.contrib import admin as admin_site

        context.update(site_header=admin_site.site.site_header, site_title=admin_site.site.site_title)
    html = render_to_string("admin/redis_unavailable.html" if admin else "503.html", context)
    response = HttpResponse(html, status=503)
    response["Retry-After"] = str(REDIS_RETRY_AFTER_S)
    return already_logged(response)


def means_redis_unavailable(exc: BaseException) -> bool:
    """Redis cannot be reached, did not answer in time, or a cluster is moving the key past
    the node map's redirect deadline: a known condition, not a bug."""
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError)) or is_redirect(exc)


class RedisUnavailableMiddleware(AsyncMiddleware):
    """A page (the front page, /live/, the admin's Redis streams pages) whose view finds Redis
    unreachable answers the styled 503 with ``Retry-After``, not 500 with a traceback; logged
    once per 10 s. The API, /health/ and /metrics answer JSON of their own (streamsite/api.py)."""

    async def __call__(self, request):
        return await self.get_response(request)

    async def process_exception(self, request, exception):
        if request.path.startswith(("/api/", *HOST_CHECK_EXEMPT)) or not means_redis_unavailable(exception):
            return None
        if descriptors().explains(exception):
            return None  # out of descriptors: this process's shortage (ApiShapeMiddleware answers)
        _redis_tally.note(log, f"redis unavailable on {request.path}: answered 503 ({exception})")
        return redis_unavailable_page(request)
