"""One async-native middleware in front of everything.

Django's own middleware (sessions, CSRF, auth, messages, …) subclasses ``MiddlewareMixin``,
which under ASGI runs every hook through ``sync_to_async``: two hops through one shared
thread per middleware per request. Measured here, that stack cut the API's throughput by more
than half. The admin needs that stack; the API, health and streaming paths do not: for them
we run just the pure, non-blocking parts (security headers, a lazy session, a lazy user)
directly on the event loop. Every other path gets the full stack from ``FULL_MIDDLEWARE``.
"""

from __future__ import annotations

import time

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import JsonResponse
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.module_loading import import_string

from monitoring.prometheus import observe_request


# Load-balancer probes and Prometheus scrapers reach a pod by its IP, which is rarely one of
# ALLOWED_HOSTS; /metrics has its own address rules (METRICS_ALLOWED_CIDRS).
HOST_CHECK_EXEMPT = ("/health/", "/metrics")


def human_size(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def method_not_allowed(request, original) -> JsonResponse:
    allowed = original.get("Allow", "")
    response = JsonResponse(
        {"detail": f"method {request.method} not allowed on {request.path}; allowed: {allowed}"}, status=405
    )
    response["Allow"] = allowed
    return response


def build_chain(paths: list[str], get_response):
    handler = get_response
    for path in reversed(paths):
        handler = import_string(path)(handler)
    return handler


class PathRoutedMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response):
        markcoroutinefunction(self)
        self.lean = get_response
        self.full = build_chain(settings.FULL_MIDDLEWARE, get_response)
        self.prefixes = tuple(settings.LEAN_PATH_PREFIXES)
        # Used only for their pure, non-blocking hooks.
        self.security = SecurityMiddleware(get_response)
        self.session = SessionMiddleware(get_response)
        self.auth = AuthenticationMiddleware(get_response)

    def body_too_big(self, request) -> JsonResponse | None:
        """API bodies are capped at STREAMS_MAX_BODY (1 MiB), workouts at the larger
        DATA_UPLOAD_MAX_MEMORY_SIZE (enforced by Django when the body is read)."""
        path = request.path_info
        if not path.startswith("/api/") or path.startswith("/api/workouts"):
            return None
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError:
            return JsonResponse({"detail": "invalid Content-Length header"}, status=400)
        if length > settings.STREAMS_MAX_BODY:
            return JsonResponse(
                {"detail": f"request body is larger than the limit of {human_size(settings.STREAMS_MAX_BODY)}"},
                status=413,
            )
        return None

    async def __call__(self, request):
        started = time.perf_counter()
        response = await self.route(request)
        observe_request(request, response.status_code, time.perf_counter() - started)
        return response

    async def route(self, request):
        if not request.path_info.startswith(self.prefixes):
            return await self.full(request)
        if not request.path_info.startswith(HOST_CHECK_EXEMPT):
            request.get_host()  # enforces ALLOWED_HOSTS (DisallowedHost → 400), as CommonMiddleware would
        redirect = self.security.process_request(request)
        if redirect is not None:
            return redirect
        too_big = self.body_too_big(request)
        if too_big is not None:
            return too_big
        self.session.process_request(request)  # lazy: no I/O unless the session is read
        self.auth.process_request(request)  # lazy: request.auser() loads the user on demand
        response = await self.lean(request)
        if response.status_code == 405 and not response.get("Content-Type", "").startswith("application/json"):
            response = method_not_allowed(request, response)
        response = self.security.process_response(request, response)
        # What XFrameOptionsMiddleware does for the full stack: no page of ours in a frame.
        response.headers.setdefault("X-Frame-Options", settings.X_FRAME_OPTIONS)
        return response
