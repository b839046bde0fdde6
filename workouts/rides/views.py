"""The coach's pages: the rides going on now (``/``), one rider live (``/live/{name}``) and a
group ride (``/live/?streams=a,b``); and the athlete's publisher, ``/ride/``.

They read with the caller's identity (a session, a bearer token, or nobody) and the stream
read rule: a stream the caller may not read is a 404, as in the API. Each page keeps one live
connection, a metrics SSE (workouts/rides/tracking.py); the front page also lists the rides
(``GET /api/rides``) every few seconds. A page's settings reach its script as JSON
(``json_script``), its script and styles come from this server: no inline script, no outside
file (the Content-Security-Policy). Redis unreachable is the styled 503 of
``streamsite.middleware.RedisUnavailableMiddleware``; errors are the site's 400 and 404 pages.
"""

from django.conf import settings
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse

from streams.access import identity, rules
from streams.access.identity import AccessError, Identity
from streams.core.errors import InvalidInput
from streams.live.follow import follow_many
from streams.store import services as store
from streams.store.names import validate_stream_name

ERROR_PAGES = {400: "400.html", 404: "404.html", 503: "503.html"}


RETRY_AFTER_S = 5


def error_page(request, status: int, detail: str):
    """The site's styled error page for ``status`` (the 404 page for a refusal of any kind; a
    503, say the database cannot confirm who is asking, with ``Retry-After``)."""
    template = ERROR_PAGES.get(status, "404.html")
    context = {"detail": detail, "path": request.path, "retry_after": RETRY_AFTER_S}
    response = render(request, template, context, status=status)
    if status == 503:
        response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _page(request, template: str, ident: Identity, **context):
    return render(request, template, {"viewer": ident.username if ident.user_id else "", **context})


async def home_page(request):
    """The rides going on now that the caller may read, live; tick several, open them as a group."""
    try:
        ident = await identity.identify_request(request)
    except AccessError as exc:
        return error_page(request, exc.status, exc.detail)
    # Reads the registry: a Redis that cannot be reached is the styled 503 here, not a page
    # that never fills. How many streams the caller may read tells the empty state apart.
    readable = await store.streams_list(limit=1, reader=rules.stream_reader(ident))
    config = {
        "rides_url": "/api/rides",
        "metrics_url": reverse("api:follow_many_metrics"),
        "group_url": reverse("live-group"),
        "live_url": reverse("live", kwargs={"name": "NAME"}),
        "max_streams": settings.SSE_MAX_STREAMS,
    }
    return _page(request, "rides/home.html", ident, config=config, readable=readable.count)


async def live_page(request, name: str):
    """What a coach opens for one rider: elapsed and moving time, 3 s power, NP, IF, TSS,
    average power, heart rate, cadence, speed and distance, the last minutes charted over the
    FTP's zones, the ride's state, and once it ended its summary."""
    try:
        validate_stream_name(name)
        ident = await identity.identify_request(request)
        await store.check_readable(ident, [name])
    except InvalidInput as exc:
        return error_page(request, 400, str(exc))
    except AccessError as exc:
        return error_page(request, exc.status, exc.detail)
    config = {
        "name": name,
        "metrics_url": reverse("api:follow_stream_metrics", kwargs={"name": name}),
    }
    return _page(request, "rides/live.html", ident, name=name, config=config)


async def group_page(request):
    """A group ride: one row per rider, live from one multi-stream metrics connection. Without
    ``streams`` there is no group to show: the front page lists the rides to pick from."""
    if "streams" not in request.GET:
        return redirect("home")
    try:
        # The metrics SSE's own list rule (required, ≤ SSE_MAX_STREAMS, no repeats, valid names).
        names = list((await follow_many(request.GET.get("streams", ""), resume=None, mode="start")).names)
        ident = await identity.identify_request(request)
        await store.check_readable(ident, names)
    except InvalidInput as exc:
        return error_page(request, 400, f"{exc}. A group view lists its riders: /live/?streams=anna,ben")
    except AccessError as exc:
        return error_page(request, exc.status, exc.detail)
    config = {
        "names": names,
        "metrics_url": reverse("api:follow_many_metrics") + "?streams=" + ",".join(names),
        "live_urls": {n: reverse("live", kwargs={"name": n}) for n in names},
    }
    return _page(request, "rides/group.html", ident, names=names, config=config)


async def ride_page(request):
    """The athlete's publisher (``/ride/``): Bluetooth sensors in the browser, one entry a
    second over the stream's WebSocket, an outbox for the time the connection is down. It
    reads nothing from Redis: the stream is the page's to pick. Anonymous callers get the page
    with a sign-in link and a field for an API token (kept in the browser)."""
    try:
        ident = await identity.identify_request(request)
    except AccessError as exc:
        return error_page(request, exc.status, exc.detail)
    config = {
        "session": ident.via == "session",
        "csrf_token": get_token(request),
        "stream_url": reverse("api:get_stream", kwargs={"name": "NAME"}),
        "live_url": reverse("live", kwargs={"name": "NAME"}),
        "ws_path": "/ws/streams/NAME/",
        "sample_ms": sample_interval_ms(request),
        "max_frame_bytes": settings.STREAMS_MAX_BODY,  # the page's frames stay under it
    }
    return _page(request, "rides/ride.html", ident, config=config)


def sample_interval_ms(request) -> int:
    """How often /ride/ samples, in ms of page time: 1000, or ``?sample_ms=`` (50..1000) where
    ``RIDE_PAGE_FAST_CLOCK`` is on (tests and demos); each sample still advances the ride's
    time ``t`` by one second."""
    if not settings.RIDE_PAGE_FAST_CLOCK:
        return 1000
    try:
        return min(1000, max(50, int(request.GET.get("sample_ms", 1000))))
    except ValueError:
        return 1000
