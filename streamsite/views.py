"""Error handlers. Loaded with the ASGI application (streamsite/asgi.py ``warm_error_paths``), not
at the first error: a process out of file descriptors cannot import a module or read a template,
and its errors must still be answered."""

import logging

from django.http import HttpResponse, JsonResponse
from django.template import TemplateDoesNotExist, loader
from django.urls import get_resolver
from django.views.defaults import bad_request, page_not_found, server_error

from streams.core.descriptors import RETRY_AFTER_S, Tally, descriptors
from streams.core.instruments import DESCRIPTOR_REFUSALS

log = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/health/", "/metrics")
OUT_OF_DESCRIPTORS = "this server is out of file descriptors (open connections): try again later"
_tally = Tally()


def not_found(request, exception=None):
    """JSON 404 under /api/ (clients parse it); the site's 404 page elsewhere (templates/404.html)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no such endpoint: {request.method} {request.path}"}, status=404)
    return page_not_found(request, exception)


def bad_request_json(request, exception=None):
    """JSON 400 under /api/ for what Django itself rejects before a view runs; the site's 400
    page elsewhere (templates/400.html)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"bad request: {exception or 'malformed request'}"}, status=400)
    return bad_request(request, exception)


def server_error_json(request):
    """A 500 is a bug; an API client still gets JSON it can parse. A failure while the process
    is out of descriptors is a 503 instead (Django gives this handler no exception to look at:
    it counts them)."""
    if descriptors().exhausted():
        return out_of_descriptors_response(request)
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "internal server error (logged)"}, status=500)
    return server_error(request)


def out_of_descriptors_response(request, exc: BaseException | None = None) -> HttpResponse:
    """503 with ``Retry-After`` and ``Connection: close`` (the client's descriptor comes back);
    counted, and logged once per 10 s with how many."""
    DESCRIPTOR_REFUSALS.labels(where="error").inc()
    _tally.note(log, f"out of file descriptors on {request.path}: answered 503 ({type(exc).__name__ if exc else 'no descriptor'})")
    if request.path.startswith(JSON_PREFIXES):
        response = JsonResponse({"detail": OUT_OF_DESCRIPTORS}, status=503)
    else:
        response = HttpResponse(OUT_OF_DESCRIPTORS, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_S)
    response["Connection"] = "close"
    response._has_been_logged = True  # Django's "Service Unavailable: <path>" line: the tally says it
    return response


def warm_error_paths() -> None:
    """Resolve the error handlers and load the templates of Django's error pages now, so that
    answering an error opens no file later (the cached template loader keeps them)."""
    resolver = get_resolver()
    for status in (400, 403, 404, 500):
        resolver.resolve_error_handler(status)
    for name in ("400.html", "403.html", "404.html", "500.html", "503.html"):
        try:
            loader.get_template(name)
        except TemplateDoesNotExist:
            pass  # Django's inline page then (the miss is cached too)
    "".encode("unicode_escape")  # Django's log_response escapes with this codec: imported lazily
    descriptors()  # the budget, with the limit of the process as it starts
