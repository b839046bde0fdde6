"""The coach's pages: one rider live (``/live/{name}``) and a group ride (``/live/?streams=a,b``).

Both read with the caller's identity (a session, a bearer token, or nobody) and the stream
read rule: a stream the caller may not read is a 404, as in the API. Each page keeps one live
connection, a metrics SSE (workouts/rides/tracking.py): numbers and the chart's points (the
first event carries the last 5 minutes of the chart). No script or style comes from outside
this server.
"""

import json

from django.shortcuts import render
from django.urls import reverse

from streams.access import identity
from streams.access.identity import AccessError
from streams.core.errors import InvalidInput
from streams.live.follow import follow_many
from streams.store import services as store
from streams.store.names import validate_stream_name


async def _check_readable(request, names: list[str]) -> None:
    """The read rule (streams/access/rules.py) for the page's caller."""
    await store.check_readable(await identity.identify_request(request), names)


def _error(request, detail: str, status: int):
    return render(request, "rides/live_error.html", {"detail": detail}, status=status)


async def live_page(request, name: str):
    """What a coach opens for one rider: elapsed and moving time, 3 s power, NP, IF, TSS,
    average power, heart rate, cadence, and the last minutes charted over the FTP's zones."""
    try:
        validate_stream_name(name)
        await _check_readable(request, [name])
    except InvalidInput as exc:
        return _error(request, str(exc), 400)
    except AccessError as exc:
        return _error(request, exc.detail, exc.status)
    urls = {"metrics": reverse("api:follow_stream_metrics", kwargs={"name": name})}
    return render(request, "rides/live.html", {"name": name, "urls_json": json.dumps(urls)})


async def group_page(request):
    """A group ride: one row per rider, live from one multi-stream metrics connection."""
    try:
        # The metrics SSE's own list rule (required, ≤ SSE_MAX_STREAMS, no repeats, valid names).
        names = list((await follow_many(request.GET.get("streams", ""), resume=None, mode="start")).names)
        await _check_readable(request, names)
    except InvalidInput as exc:
        return _error(request, str(exc), 400)
    except AccessError as exc:
        return _error(request, exc.detail, exc.status)
    context = {
        "names": names,
        "names_json": json.dumps(names),
        "metrics_url_json": json.dumps(reverse("api:follow_many_metrics") + "?streams=" + ",".join(names)),
        "live_urls_json": json.dumps({n: reverse("live", kwargs={"name": n}) for n in names}),
    }
    return render(request, "rides/group.html", context)
