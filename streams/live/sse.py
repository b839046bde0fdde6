"""Server-Sent Events: event formats and the async generators behind the SSE views.

Single stream (``/api/streams/{name}/sse``): each entry is ``id: <stream id>`` plus
``data: <the entry's fields as JSON>`` with the default event type, so
``EventSource.onmessage`` sees it; ``Last-Event-ID`` is a plain stream id.

Several streams (``/api/sse?streams=a,b,c``): each entry is
``data: {"stream": name, "id": stream id, "data": {...}}`` (default event type) and its
``id:`` is the *composite* position: one stream id per requested stream, in the order of the
``streams`` parameter, joined by commas, then ``~`` and a fingerprint of the list
(``1700000000000-0,0-0,1700000000123-4~9f3a01c2``). A browser reconnects with the same URL and
that composite id as ``Last-Event-ID``, so every stream resumes exactly where it stopped; the
fingerprint refuses (400) a resume with another list or order.

With ``?rate=N`` (conflation, streams/live/conflation.py) at most N events per second per
stream, each the newest entry of its interval, and every event's data says how many entries it
stands for: ``data: {"id": stream id, "data": {...}, "conflated": n}`` for one stream,
``{"stream", "id", "data", "conflated": n}`` for several (``n`` = 1: nothing skipped). The ids
are the same as without ``rate``: each is a resume point.

A resume (Last-Event-ID, or a composite id) that cannot go on where the client stands gets one
``event: reset`` per such stream before its entries: ``data: {"stream", "requested", "first_id",
"reason": "trimmed" | "rewound", "detail"}`` with ``id:`` the position that follows it (the
stream at ``0-0``), then the stream's entries from its oldest one.

A stream ends with one of ``event: overflow`` (the client read too slowly; reconnect with
Last-Event-ID, nothing is lost), ``event: deleted`` (the stream was deleted; do not
reconnect) or ``event: shutdown`` (the server is stopping; reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

from django.conf import settings

from streams.core.instruments import SSE_DURATION, SSE_OPEN, operation_timings
from streams.live.conflation import parse_rate
from streams.live.follow import (
    Ended,
    Follow,
    Reset,
    follow_many,
    follow_one,
    live_batches,
)
from streams.live.hub import Entry

EventsOf = Callable[[Follow], AsyncIterator[str]]  # what an SSE body sends for a follow

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def requested_resume_id(request) -> str | None:
    return request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or None


async def follow_for_stream(request, name: str) -> Follow:
    rate = parse_rate(request.GET.get("rate"))
    follow = await follow_one(name, resume=requested_resume_id(request), mode=request.GET.get("from"))
    follow.rate = rate
    return follow


async def follow_for_streams(request) -> Follow:
    rate = parse_rate(request.GET.get("rate"))
    follow = await follow_many(
        request.GET.get("streams", ""), resume=requested_resume_id(request), mode=request.GET.get("from")
    )
    follow.rate = rate
    return follow


def format_entry(follow: Follow, entry: Entry) -> str:
    if follow.rate is not None:
        return format_conflated(follow, entry)
    if not follow.multi:
        return f"id: {entry.id}\ndata: {entry.data_json}\n\n"
    data = f'{{"stream": {json.dumps(entry.name)}, "id": "{entry.id}", "data": {entry.data_json}}}'
    return f"id: {follow.composite_id()}\ndata: {data}\n\n"


def format_conflated(follow: Follow, entry: Entry) -> str:
    """A conflated follow's event: the entry with how many entries it stands for."""
    count = getattr(entry, "count", 1)
    if not follow.multi:
        return f'id: {entry.id}\ndata: {{"id": "{entry.id}", "data": {entry.data_json}, "conflated": {count}}}\n\n'
    data = (f'{{"stream": {json.dumps(entry.name)}, "id": "{entry.id}", "data": {entry.data_json}, '
            f'"conflated": {count}}}')
    return f"id: {follow.composite_id()}\ndata: {data}\n\n"


def reset_payload(reset: Reset) -> dict:
    return {"stream": reset.name, "requested": reset.requested, "first_id": reset.first_id,
            "reason": reset.reason, "detail": reset.detail}


def format_reset(follow: Follow, reset: Reset) -> str:
    """``event: reset``; its id is the position after it (the stream at ``0-0``: live_batches
    moved it), so a reconnect right after it does not get it again."""
    return f"event: reset\nid: {follow.resume_id()}\ndata: {json.dumps(reset_payload(reset))}\n\n"


def format_end(follow: Follow, ended: Ended) -> str:
    if ended.reason == "deleted":
        payload = {"stream": ended.detail, "detail": f"stream {ended.detail!r} was deleted"}
    else:
        payload = {"detail": ended.detail, "last_event_id": follow.resume_id()}
    return f"event: {ended.reason}\ndata: {json.dumps(payload)}\n\n"


def format_batch(follow: Follow, batch: list[Entry]) -> str:
    """Advance the listener's positions entry by entry, so each id is that event's own."""
    parts = []
    for entry in batch:
        follow.positions[entry.name] = entry.id
        parts.append(format_entry(follow, entry))
    return "".join(parts)


@contextlib.asynccontextmanager
async def sse_connection():
    """Count the open connection and time it (Prometheus and the operations table)."""
    SSE_OPEN.inc()
    started = time.perf_counter()
    try:
        yield
    finally:
        SSE_OPEN.dec()
        seconds = time.perf_counter() - started
        SSE_DURATION.observe(seconds)
        operation_timings().record("sse_connection", seconds * 1000)


async def hub_events(follow: Follow) -> AsyncIterator[str]:
    async with sse_connection():
        yield f"retry: {settings.SSE_RETRY_MS}\n\n"
        async for item in live_batches(follow, heartbeat=settings.SSE_HEARTBEAT_INTERVAL / 1000):
            if isinstance(item, Ended):
                yield format_end(follow, item)
                return
            if isinstance(item, Reset):
                yield format_reset(follow, item)
                continue
            yield format_batch(follow, item) if item else ": ping\n\n"
            item = None  # not kept while the next one is awaited (see live_batches)


class EventStream:
    """The response body: the events, ``aclose()`` (the lean handler sends the body itself
    and calls it when the stream ends: streams/core/handoff.py) and ``close()``, which
    Django calls in a worker thread when it streamed the body (another handler, the test
    client). Both give back the caller's live-connection place and leave the hub at once: a
    body whose ``send`` failed must not keep its subscription until the garbage collector
    finds its suspended generator."""

    def __init__(self, events: AsyncIterator[str], admission, follow: Follow) -> None:
        self._events = events
        self._admission = admission
        self._follow = follow
        self._loop = asyncio.get_running_loop()

    def __aiter__(self):
        return self._events  # no wrapper per event: aclose() / close() always follow

    async def aclose(self) -> None:
        try:
            await self._events.aclose()  # runs the generator's finally blocks now
        finally:
            self.close()

    def close(self) -> None:
        self._admission.release()
        leave = self._follow.leave
        if leave is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(leave)
