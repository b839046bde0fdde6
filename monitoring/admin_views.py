"""Admin pages: the live monitoring dashboard and the Redis streams browser (thin: services do
the work; async services are called through ``call_service``)."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from streams.access.identity import MANAGE_ALL_STREAMS, VIEW_ALL_STREAMS
from streams.core.errors import InvalidInput
from streams.engine.context import close_redis_context, current_context
from streams.store import services as store
from streams.store.names import validate_stream_name

PAGE_SIZE = 50


def call_service(fn, **kwargs):
    """Run an async stream service from a sync admin view.

    Under the ASGI server this runs on the server's event loop (its pools). Called without
    one (tests, WSGI), it gets a fresh loop and closes what it opened there."""

    async def run():
        fresh = current_context() is None
        try:
            return await fn(**kwargs)
        finally:
            if fresh:
                await close_redis_context()

    return async_to_sync(run)()


def _context(request, **extra):
    from django.contrib import admin

    return {**admin.site.each_context(request), **extra}


def dashboard(request):
    return TemplateResponse(request, "monitoring/dashboard.html", _context(
        request, title="Monitoring", metrics_url=json.dumps(reverse("health-metrics")), target_ms=10,
    ))


def _require(request, *perms: str) -> None:
    """The streams pages show every athlete's data: staff alone is not enough."""
    if not any(request.user.has_perm(p) for p in perms):
        raise PermissionDenied(f"needs the permission {' or '.join(perms)}")


READ_PERMS = (VIEW_ALL_STREAMS, MANAGE_ALL_STREAMS)


def streams_list(request):
    _require(request, *READ_PERMS)
    prefix = request.GET.get("q", "").strip()[:128]
    try:
        page_number = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page_number = 1

    async def load():
        page = await store.streams_list(prefix=prefix, limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE)
        infos = await store.stream_info_batch(names=page.names)  # one batch call per page
        return page, infos

    page, infos = call_service(load)
    rows = [{"name": n, "info": infos.get(n)} for n in page.names]
    pages = max(1, -(-page.count // PAGE_SIZE))
    return TemplateResponse(request, "monitoring/streams_list.html", _context(
        request, title="Redis streams", rows=rows, count=page.count, q=prefix, page=page_number, pages=pages,
        has_prev=page_number > 1, has_next=page_number < pages,
    ))


def stream_detail(request, name: str):
    _require(request, *READ_PERMS)
    try:
        validate_stream_name(name)
    except InvalidInput:
        raise Http404("no such stream") from None

    async def load():
        return await store.stream_info_batch(names=[name]), await store.stream_latest(name=name, count=20)

    infos, latest = call_service(load)
    if infos[name] is None:
        raise Http404(f"stream {name!r} not found")
    return TemplateResponse(request, "monitoring/stream_detail.html", _context(
        request, title=f"Stream {name}", name=name, info=infos[name], entries=latest or [],
    ))


def streams_delete(request):
    """POST names → confirmation page; POST names + confirm → delete through the service."""
    _require(request, MANAGE_ALL_STREAMS)
    if request.method != "POST":
        return HttpResponseRedirect(reverse("admin:redis-streams"))
    names = [n for n in request.POST.getlist("names") if n]
    try:
        for name in names:
            validate_stream_name(name)
    except InvalidInput as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("admin:redis-streams"))
    if not names:
        messages.warning(request, "Select at least one stream.")
        return HttpResponseRedirect(reverse("admin:redis-streams"))
    if request.POST.get("confirm") != "yes":
        return TemplateResponse(request, "monitoring/streams_delete.html", _context(
            request, title="Delete streams?", names=names,
        ))
    outcome = call_service(store.streams_delete, names=names)
    messages.success(request, f"Deleted {len(outcome.deleted)} of {len(names)} streams.")
    return HttpResponseRedirect(reverse("admin:redis-streams"))
