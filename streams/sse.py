"""Server-Sent Events: start positions, event formats and the async generators behind the views.

Single stream (``/api/streams/{name}/sse``): each entry is ``id: <stream id>`` plus
``data: <the entry's fields as JSON>`` with the default event type, so
``EventSource.onmessage`` sees it; ``Last-Event-ID`` is a plain stream id.

Several streams (``/api/sse?streams=a,b,c``): each entry is
``data: {"stream": name, "id": stream id, "data": {...}}`` (default event type) and its
``id:`` is the *composite* position: one stream id per requested stream, in the order of the
``streams`` parameter, joined by commas (``1700000000000-0,0-0,1700000000123-4``). A browser
reconnects with the same URL and that composite id as ``Last-Event-ID``, so every stream
resumes exactly where it stopped.

A stream ends with one of ``event: overflow`` (the client read too slowly; reconnect with
Last-Event-ID, nothing is lost), ``event: deleted`` (the stream was deleted; do not
reconnect) or ``event: shutdown`` (the server is stopping; reconnect).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from django.conf import settings

from streams import operations
from streams.clients import redis_context
from streams.hub import Entry, Subscription, make_entry
from streams.names import InvalidInput, validate_entry_id, validate_stream_name
from streams.positions import START, parse_id

CATCH_UP_CHUNK = 500
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Follow:
    """What one SSE connection follows and where each stream stands (last id delivered)."""

    names: tuple[str, ...]
    positions: dict[str, str]
    multi: bool

    def composite_id(self) -> str:
        return ",".join(self.positions[n] for n in self.names)

    def resume_id(self) -> str:
        return self.composite_id() if self.multi else self.positions[self.names[0]]


# --- parsing the request ---------------------------------------------------------------------
def requested_resume_id(request) -> str | None:
    return request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or None


def _start_mode(request) -> str:
    mode = request.GET.get("from")
    if mode not in (None, "", "start", "now"):
        raise InvalidInput(f"invalid from={mode!r}: use from=start, or omit it for new entries only")
    return mode or "now"


async def follow_one(request, name: str) -> Follow:
    """Where a single-stream listener starts. Last-Event-ID wins over ``from`` (reconnects)."""
    validate_stream_name(name)
    resume = requested_resume_id(request)
    mode = _start_mode(request)
    if resume is not None:
        position = validate_entry_id(resume.strip(), which="Last-Event-ID")
    elif mode == "start":
        position = START
    else:
        position = await operations.stream_last_id(name=name)
    return Follow(names=(name,), positions={name: position}, multi=False)


async def follow_many(request) -> Follow:
    raw = request.GET.get("streams", "")
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    if not names:
        raise InvalidInput("streams is required: a comma-separated list of stream names")
    limit = settings.SSE_MAX_STREAMS
    if len(names) > limit:
        raise InvalidInput(f"{len(names)} streams is more than the limit of {limit} per connection")
    if len(set(names)) != len(names):
        raise InvalidInput("streams lists a name twice")
    for name in names:
        validate_stream_name(name)
    resume = requested_resume_id(request)
    mode = _start_mode(request)
    if resume is not None:
        ids = [part.strip() for part in resume.split(",")]
        if len(ids) != len(names):
            raise InvalidInput(
                f"Last-Event-ID has {len(ids)} positions for {len(names)} streams: "
                "it must be the composite id this endpoint sent, for the same streams in the same order"
            )
        positions = {n: validate_entry_id(i, which="Last-Event-ID position") for n, i in zip(names, ids)}
    elif mode == "start":
        positions = dict.fromkeys(names, START)
    else:
        positions = {n: await operations.stream_last_id(name=n) for n in names}
    return Follow(names=names, positions=positions, multi=True)


# --- formatting --------------------------------------------------------------------------------
def format_entry(follow: Follow, entry: Entry) -> str:
    if not follow.multi:
        return f"id: {entry.id}\ndata: {entry.data_json}\n\n"
    data = f'{{"stream": {json.dumps(entry.name)}, "id": "{entry.id}", "data": {entry.data_json}}}'
    return f"id: {follow.composite_id()}\ndata: {data}\n\n"


def format_end(follow: Follow, reason: str, detail: str) -> str:
    if reason == "deleted":
        payload = {"stream": detail, "detail": f"stream {detail!r} was deleted"}
    else:
        payload = {"detail": detail, "last_event_id": follow.resume_id()}
    return f"event: {reason}\ndata: {json.dumps(payload)}\n\n"


def accept(follow: Follow, entry: Entry, cursors: dict[str, tuple[int, int]]) -> str | None:
    """The entry's text if it is newer than what this listener delivered, else None."""
    if entry.pos <= cursors[entry.name]:
        return None  # delivered by the catch-up already
    cursors[entry.name] = entry.pos
    follow.positions[entry.name] = entry.id
    return format_entry(follow, entry)


# --- the generators ----------------------------------------------------------------------------
async def _catch_up(name: str, after: str) -> AsyncIterator[list[Entry]]:
    while True:
        chunk = await operations.stream_range(name=name, start="(" + after, end="+", count=CATCH_UP_CHUNK)
        if not chunk:
            return
        yield [make_entry(name, e.id, e.data) for e in chunk]
        if len(chunk) < CATCH_UP_CHUNK:
            return
        after = chunk[-1].id


async def hub_events(follow: Follow) -> AsyncIterator[str]:
    """Catch up from each stream's position, then follow the hub: no gap, no duplicate.

    The subscription is made *before* the catch-up reads, so every entry newer than the
    hub's join point is queued; the catch-up covers everything up to at least that point;
    entries at or before what was already delivered are dropped.
    """
    ctx = await redis_context()
    hub = ctx.live_hub()
    heartbeat = settings.SSE_HEARTBEAT_INTERVAL / 1000
    cursors = {n: parse_id(p) for n, p in follow.positions.items()}
    sub: Subscription = await hub.subscribe(follow.names)
    try:
        yield f"retry: {settings.SSE_RETRY_MS}\n\n"
        for name in follow.names:
            async for batch in _catch_up(name, follow.positions[name]):
                text = "".join(t for e in batch if (t := accept(follow, e, cursors)) is not None)
                if text:
                    yield text
        while True:
            batch = await sub.next_batch(heartbeat)
            text = "".join(t for e in batch if (t := accept(follow, e, cursors)) is not None)
            if text:
                yield text
            if sub.end_reason is not None:
                yield format_end(follow, sub.end_reason, sub.end_detail)
                return
            if not batch:
                yield ": ping\n\n"
    finally:
        hub.unsubscribe(sub)


async def pool_events(follow: Follow) -> AsyncIterator[str]:
    """The seed's design, kept for side-by-side benchmarks (SSE_DELIVERY=pool): each listener
    holds a BlockingClientPool connection for its own XREAD. No deletion events."""
    ctx = await redis_context()
    prefix = ctx.config.stream_key_prefix
    heartbeat_ms = settings.SSE_HEARTBEAT_INTERVAL
    async with ctx.blocking.client() as r:
        yield f"retry: {settings.SSE_RETRY_MS}\n\n"
        while True:
            reply = await r.xread(
                {prefix + n: follow.positions[n] for n in follow.names}, count=100, block=heartbeat_ms
            )
            if not reply:
                yield ": ping\n\n"
                continue
            parts = []
            for key, entries in reply:
                name = key[len(prefix):]
                for entry_id, fields in entries:
                    follow.positions[name] = entry_id
                    parts.append(format_entry(follow, make_entry(name, entry_id, fields)))
            yield "".join(parts)


def event_source(follow: Follow) -> AsyncIterator[str]:
    return pool_events(follow) if settings.SSE_DELIVERY == "pool" else hub_events(follow)
