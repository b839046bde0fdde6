"""Admin pages: the live monitoring dashboard and the Redis streams browser (thin: services do
the work; async services are called through ``call_service``)."""

from __future__ import annotations

import json
import time

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from redis.exceptions import RedisError

from streams.access.identity import MANAGE_ALL_STREAMS, VIEW_ALL_STREAMS, Actor
from streams.core.errors import InvalidInput
from streams.engine.context import close_redis_context, current_context
from streams.store import services as store
from streams.store.names import validate_stream_name
from workouts.rides.archive import archive_stream
from workouts.rides.states import ride_state
from workouts.samples import SamplesError

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
        may_manage=request.user.has_perm(MANAGE_ALL_STREAMS),
    ))


def _posted_names(request) -> list[str] | None:
    """The streams a POST names, validated; None (with a message) when there are none or one is bad."""
    names = [n for n in request.POST.getlist("names") if n]
    try:
        for name in names:
            validate_stream_name(name)
    except InvalidInput as exc:
        messages.error(request, str(exc))
        return None
    if not names:
        messages.warning(request, "Select at least one stream.")
        return None
    return names


def _selected_streams(request) -> list[str] | HttpResponseRedirect:
    """The streams a stream manager's POST names, else back to the list."""
    _require(request, MANAGE_ALL_STREAMS)
    names = _posted_names(request) if request.method == "POST" else None
    return HttpResponseRedirect(reverse("admin:redis-streams")) if names is None else names


def streams_delete(request):
    """POST names → confirmation page; POST names + confirm → delete through the service."""
    names = _selected_streams(request)
    if isinstance(names, HttpResponseRedirect):
        return names
    if request.POST.get("confirm") != "yes":
        return TemplateResponse(request, "monitoring/streams_delete.html", _context(
            request, title="Delete streams?", names=names,
        ))
    outcome = call_service(store.streams_delete, names=names)
    messages.success(request, f"Deleted {len(outcome.deleted)} of {len(names)} streams.")
    return HttpResponseRedirect(reverse("admin:redis-streams"))


# --- archive: a stream becomes a workout (workouts.rides.archive), as the admin -------------------
def _last_entry_age_s(info) -> float | None:
    if info is None or info.last_id is None:
        return None
    return max(0.0, time.time() - int(info.last_id.split("-")[0]) / 1000)


def _ride_open(info) -> bool:
    """The ride goes on (docs/rides.md: ``ride_state``, the one definition): archiving it needs
    the admin's force. An empty stream is not open: its archive says it has no entries."""
    return ride_state(info) in ("live", "stale")


def _back(names: list[str], infos: dict) -> HttpResponseRedirect:
    """To the stream's page (one that exists), else to the list."""
    if len(names) == 1 and infos.get(names[0]) is not None:
        return HttpResponseRedirect(reverse("admin:redis-stream", args=[names[0]]))
    return HttpResponseRedirect(reverse("admin:redis-streams"))


def streams_archive(request):
    """POST names → confirmation page (offers force for rides that have not ended); POST names +
    confirm → each stream archived as a workout of its owner (or of the admin, for a stream
    nobody owns), a message per stream."""
    names = _selected_streams(request)
    if isinstance(names, HttpResponseRedirect):
        return names
    try:
        infos = call_service(store.stream_info_batch, names=names)
    except RedisError as exc:
        messages.error(request, f"Redis is unavailable ({exc}): nothing was archived. Try again when it is back.")
        return HttpResponseRedirect(reverse("admin:index"))  # the streams pages need Redis to show it
    if request.POST.get("confirm") != "yes":
        rows = [{"name": n, "info": infos[n], "open": _ride_open(infos[n]), "age": _last_entry_age_s(infos[n])}
                for n in names]
        return TemplateResponse(request, "monitoring/streams_archive.html", _context(
            request, title="Archive streams as workouts?", rows=rows, any_open=any(r["open"] for r in rows),
        ))
    force = request.POST.get("force") == "yes"
    for name in names:
        _archive_one(request, name, infos[name], force=force)
    return _back(names, infos)


def _archive_one(request, name: str, info, *, force: bool) -> None:
    if info is None:
        messages.error(request, f"Stream {name!r} not found: nothing to archive.")
        return
    if _ride_open(info) and not force:
        messages.warning(request, f"Stream {name!r}: the ride has not ended (last entry "
                                  f"{_last_entry_age_s(info):.0f} s ago). Archive it anyway with "
                                  "“archive even if the ride has not ended”.")
        return
    athlete = get_user_model().objects.filter(pk=info.meta.owner_id).first() or request.user
    actor = Actor(user_id=request.user.pk, username=request.user.get_username(), manager=True)
    try:
        archived = call_service(
            archive_stream, name=name, athlete=athlete, actor=actor, owner_id=info.meta.owner_id, force=True,  # checked above
        )
    except SamplesError:
        messages.error(request, f"Stream {name!r} has no entries: nothing to archive.")
        return
    except LookupError:
        messages.error(request, f"Stream {name!r} not found: nothing to archive.")
        return
    except RedisError as exc:
        messages.error(request, f"Redis is unavailable ({exc}): stream {name!r} was not archived.")
        return
    workout = archived.workout
    messages.success(request, format_html(
        'Archived {} as <a href="{}">workout {}</a> of {} ({} samples; <a href="{}">in the admin</a>).',
        name, reverse("workout", kwargs={"workout_id": workout.pk}), workout.pk, athlete.get_username(),
        workout.sample_count, reverse("admin:workouts_workout_change", args=[workout.pk]),
    ))
