import json

from django.shortcuts import render
from django.urls import reverse

from streams.names import InvalidInput, validate_stream_name


async def live_page(request, name: str):
    """What a coach opens: follows one stream with EventSource and draws the last 5 minutes."""
    try:
        validate_stream_name(name)
    except InvalidInput as exc:
        return render(request, "streams/live_error.html", {"detail": str(exc)}, status=400)
    sse_url = reverse("api:follow_stream", kwargs={"name": name})
    return render(request, "streams/live.html", {"name": name, "sse_url_json": json.dumps(sse_url)})
