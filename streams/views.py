import json

from django.shortcuts import render
from django.urls import reverse

from streams import identity, operations
from streams.identity import AccessError
from streams.names import InvalidInput, validate_stream_name


async def live_page(request, name: str):
    """What a coach opens: follows one stream with EventSource and draws the last 5 minutes.
    Same read rule as the stream's API (a session, or public visibility); 404 otherwise."""
    try:
        validate_stream_name(name)
        ident = await identity.identify_request(request)
        meta = (await operations.stream_meta(names=[name]))[name]
        identity.check_read(ident, name, owner_id=meta.owner_id, visibility=meta.visibility)
    except InvalidInput as exc:
        return render(request, "streams/live_error.html", {"detail": str(exc)}, status=400)
    except AccessError as exc:
        return render(request, "streams/live_error.html", {"detail": exc.detail}, status=exc.status)
    sse_url = reverse("api:follow_stream", kwargs={"name": name})
    return render(request, "streams/live.html", {"name": name, "sse_url_json": json.dumps(sse_url)})
