"""The hand-off contract between a view and the lean handler (streamsite/server/handlers.py).

A view that serves a live body (SSE) returns ``handed_off(body, request)``. Under the lean
handler, whose request scope carries a slot under ``HANDOFF``, the response is sent without a
body and the handler sends ``body`` itself once Django is done with the request; anywhere
else (the standard handler, Django's test client) it is an ordinary streaming response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from django.http import StreamingHttpResponse

HANDOFF = "streamsite.handoff"  # scope key: the slot a view puts a live body in


class HandoffBody(Protocol):
    """What a handed-off body is: an async iterator of ``str`` parts, and ``aclose()``, which
    gives back everything it holds (called once, whether or not it was iterated)."""

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class HandedOffResponse(StreamingHttpResponse):
    """A streaming response whose body the lean handler sends after Django is done."""

    handoff: object  # the lean handler's slot for this request


def handed_off(body: HandoffBody, request, **kwargs) -> StreamingHttpResponse:
    """The response for a live ``body``: handed off under the lean handler; elsewhere (the
    standard handler, Django's test client) an ordinary streaming response over it."""
    slot = request.scope.get(HANDOFF) if hasattr(request, "scope") else None
    if slot is None:
        return StreamingHttpResponse(body, **kwargs)
    response = HandedOffResponse(_nothing(), **kwargs)
    response.handoff = slot
    slot.body = body
    return response


async def _nothing():
    return
    yield  # an empty async iterator: what Django streams itself for a handed-off response
