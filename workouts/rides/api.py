"""REST and SSE of the live ride metrics: ``GET /api/streams/{name}/metrics`` (the numbers
now), ``/api/streams/{name}/metrics/sse`` (one rider, with the chart) and
``/api/metrics/sse?streams=a,b`` (a group ride). The read rule, the access re-check and the
capacity limits are the entry SSE's (streams/api.py ``serve_follow``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from django.conf import settings
from ninja import Router, Schema
from ninja.errors import HttpError

from streams.access import rules
from streams.api import (
    READ,
    SSE_DOC,
    StreamName,
    fast_json,
    serve_follow,
    with_streams_param,
)
from streams.engine.context import redis_context
from streams.live import capacity, sse
from streams.live.follow import Follow, follow_many, follow_one, live_hub
from streams.store import services as store
from streams.store.names import validate_stream_name
from workouts.rides.tracking import MetricsBoard, current_metrics, metrics_events

router = Router(tags=["live ride metrics"])


async def _metrics_events():
    """The metrics SSE body for a follow, from this loop's trackers."""
    board = MetricsBoard.of(await redis_context())

    async def events(follow: Follow) -> AsyncIterator[str]:
        async with sse.sse_connection():
            async for part in metrics_events(board, follow, heartbeat=settings.SSE_HEARTBEAT_INTERVAL / 1000):
                yield part

    return events


class MetricsOut(Schema):
    name: str
    last_id: str
    elapsed_s: float | None
    moving_s: int
    samples: int
    avg_power: float | None
    max_power: float | None
    normalized_power: float | None
    np_low_confidence: bool
    intensity_factor: float | None
    tss: float | None
    power_3s: float | None
    power_30s: float | None
    power: float | None
    heart_rate: float | None
    avg_heart_rate: float | None
    cadence: float | None
    avg_cadence: float | None
    ftp: int | None
    ftp_source: Literal["stream", "profile"] | None
    weight_kg: float | None


@router.get(
    "/streams/{name}/metrics", response=MetricsOut, auth=READ,
    summary="Live ride metrics of a stream (NP, IF, TSS, 3 s power, …)",
)
async def stream_metrics(request, name: StreamName):
    validate_stream_name(name)
    info = (await store.stream_info_batch(names=[name]))[name]
    if info is None or not rules.may_read(request.auth, info.meta):
        raise HttpError(404, f"stream {name!r} not found")
    ctx = await redis_context()
    # Its live metrics follow the stream while it answers: the followed-stream limits of a live
    # connection (the user's and the process's) apply, and nothing stays followed after it.
    client = request.META.get("REMOTE_ADDR") or None
    held = capacity.hold_streams(hub=live_hub(ctx), ident=request.auth, client_address=client, names=[name])
    try:
        return fast_json(await current_metrics(MetricsBoard.of(ctx), name, linger=False))
    except LookupError as exc:
        raise HttpError(404, str(exc)) from None
    finally:
        held.release()


METRICS_SSE_DOC = {
    **SSE_DOC,
    "parameters": [p for p in SSE_DOC["parameters"] if p["name"] != "from"],
}


@router.get(
    "/streams/{name}/metrics/sse", auth=READ, summary="Follow a stream's live metrics (SSE, event: metrics)",
    openapi_extra=METRICS_SSE_DOC,
)
async def follow_stream_metrics(request, name: StreamName):
    follow = await follow_one(name, resume=sse.requested_resume_id(request), mode="start")
    return await serve_follow(request, follow, await _metrics_events())


@router.get(
    "/metrics/sse", auth=READ,
    summary="Follow the live metrics of several streams in one connection (SSE; a group ride)",
    openapi_extra=with_streams_param(METRICS_SSE_DOC),
)
async def follow_many_metrics(request):
    follow = await follow_many(request.GET.get("streams", ""), resume=sse.requested_resume_id(request), mode="start")
    return await serve_follow(request, follow, await _metrics_events())
