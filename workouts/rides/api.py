"""REST and SSE of the live ride metrics: ``GET /api/streams/{name}/metrics`` (the numbers
now), ``/api/streams/{name}/metrics/sse`` (one rider, with the chart) and
``/api/metrics/sse?streams=a,b`` (a group ride). The read rule, the access re-check and the
capacity limits are the entry SSE's (streams/api.py ``serve_follow``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from django.conf import settings
from ninja import Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status
from pydantic import Field, field_validator

from streams.access import rules
from streams.api import (
    PUBLISH,
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
from streams.store.names import MAX_MARKER_LABEL, validate_stream_name
from workouts.rides import markers
from workouts.rides.listing import rides_list
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


class ArchivedWorkoutOut(Schema):
    id: int
    url: str
    duration_s: float | None
    moving_time_s: int
    normalized_power: float | None
    intensity_factor: float | None
    tss: float | None
    avg_power: float | None
    avg_hr: float | None
    max_power: float | None
    peak_5s: float | None
    peak_1min: float | None
    peak_5min: float | None
    peak_20min: float | None


class MarkerOut(Schema):
    label: str
    ride_s: float


class PlanProgressOut(Schema):
    id: int
    name: str
    start_s: int = Field(description="the ride second the plan starts at")
    phase: Literal["before", "running", "finished"]
    starts_in_s: int | None = Field(description="before the plan: seconds until its first step")
    steps: int
    step: int | None = Field(description="the current step's index; null before and after the plan")
    step_name: str | None
    step_elapsed_s: int | None
    step_remaining_s: int | None
    target_w: list[int] | None = Field(description="[low, high] watts; null for a % of FTP target without an FTP")
    pct_of_target: float | None = Field(description="10 s power as % of the middle of the target")
    state: Literal["under", "on", "over"] | None = Field(description="with PLAN_TOLERANCE_PCT and a 3 s hysteresis")
    step_compliance: float | None = Field(description="0-1: the step's seconds ridden on target")
    session_compliance: float | None = Field(description="0-1: the plan's seconds ridden on target so far")


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
    max_heart_rate: int | None
    critical_power: float | None = Field(description="watts: the profile's CP, else the FTP; null without both")
    w_prime: float | None = Field(description="joules: the profile's W′, else 20,000; null without CP and FTP")
    w_prime_balance: float | None = Field(description="joules (Skiba's differential form); null without CP and FTP")
    min_w_prime_balance: float | None = Field(description="joules, the lowest so far")
    w_prime_below_25_s: int | None = Field(description="ridden seconds below 25% of W′")
    power_zone: int | None = Field(description="Coggan's zone 1-7 of the 3 s power; null without FTP")
    hr_zone: int | None = Field(description="1-5 of the current heart rate; null without max heart rate")
    time_in_power_zones: list[int] | None = Field(description="seconds in zones 1-7; null without FTP")
    time_in_hr_zones: list[float] | None = Field(description="seconds in zones 1-5; null without max heart rate")
    speed: float | None
    distance: float | None
    state: Literal["waiting", "live", "stale", "ended"]
    ended_reason: Literal["owner", "idle"] | None
    last_entry_ms: int | None
    connected: bool
    workout: ArchivedWorkoutOut | None
    markers: list[MarkerOut] = Field(description="the ride's markers, oldest first (docs/rides.md)")
    plan: PlanProgressOut | None = Field(description="the step now and the compliance so far; null without a plan")
    alerts: list[Literal["w_prime_low", "hr_high", "off_target", "stale"]] = Field(
        description="the alerts raised now (each raise and clear is an `event: alert` of the metrics SSE)")


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


class GroupOut(Schema):
    rides: list[MetricsOut]
    off_target: list[str] = Field(description="the streams whose rider is live and under or over the plan's target now")


OFF_TARGET = ("under", "over")


def _off_target(snapshot: dict) -> bool:
    """Under or over the target now: a rider who stopped (``stale``, ``ended``) is not, whatever
    their last samples said (the ``stale`` state and alert tell the coach about them)."""
    plan = snapshot.get("plan")
    return bool(plan) and plan["state"] in OFF_TARGET and snapshot.get("state") == "live"


def _distance_from_target(snapshot: dict) -> float:
    pct = (snapshot.get("plan") or {}).get("pct_of_target")
    return -1.0 if pct is None else abs(pct - 100)


@router.get(
    "/metrics", response=GroupOut, auth=READ,
    summary="A group session now: each stream's live metrics, and the riders off their plan's target",
)
async def group_metrics(request, streams: str = "", sort: Literal["", "off_target"] = ""):
    """``?streams=a,b,c`` (as the group SSE); ``sort=off_target``: off-target riders first, the
    furthest from their target first. A stream the caller may not read is a 404 naming it."""
    names = (await follow_many(streams, resume=None, mode="start")).names
    infos = await store.stream_info_batch(names=list(names))
    if hidden := next((n for n in names if infos[n] is None or not rules.may_read(request.auth, infos[n].meta)), None):
        raise HttpError(404, f"stream {hidden!r} not found")
    ctx = await redis_context()
    client = request.META.get("REMOTE_ADDR") or None
    held = capacity.hold_streams(hub=live_hub(ctx), ident=request.auth, client_address=client, names=list(names))
    board = MetricsBoard.of(ctx)
    try:
        rides = list(await asyncio.gather(*(current_metrics(board, name, linger=False) for name in names)))
    except LookupError as exc:
        raise HttpError(404, str(exc)) from None
    finally:
        held.release()
    if sort == "off_target":
        rides.sort(key=lambda r: (not _off_target(r), -_distance_from_target(r)))
    return fast_json({"rides": rides, "off_target": [r["name"] for r in rides if _off_target(r)]})


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


LISTED_STATES = ("waiting", "live", "stale", "ended")


class RidesQuery(Schema):
    state: str = Field("", max_length=100, description="comma-separated: waiting, live, stale, ended")
    limit: int = Field(100, ge=1, le=200)

    @field_validator("state")
    @classmethod
    def _known_states(cls, value: str) -> str:
        unknown = [s for s in value.split(",") if s and s not in LISTED_STATES]
        if unknown:
            raise ValueError(f"unknown state {unknown[0]!r}: use {', '.join(LISTED_STATES)}")
        return value


class RideOut(Schema):
    name: str
    owner: str | None
    visibility: Literal["public", "private"] | None
    state: Literal["waiting", "live", "stale", "ended"]
    ended_reason: Literal["owner", "idle"] | None
    started_ms: int | None
    last_entry_ms: int | None
    ftp: int | None
    workout_id: int | None


class RidesOut(Schema):
    count: int
    rides: list[RideOut]


@router.get("/rides", response=RidesOut, auth=READ, summary="The rides I may read, newest activity first (docs/rides.md)")
async def list_rides(request, q: Query[RidesQuery]):
    states = frozenset(s for s in q.state.split(",") if s) or None
    count, rides = await rides_list(reader=rules.stream_reader(request.auth), states=states, limit=q.limit)
    return fast_json({"count": count, "rides": [ride.out() for ride in rides]})


class MarkerIn(Schema):
    label: str = Field(..., description=f"1-{MAX_MARKER_LABEL} characters, stripped")

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        value = value.strip()
        if not 1 <= len(value) <= MAX_MARKER_LABEL:
            raise ValueError(f"label must be 1-{MAX_MARKER_LABEL} characters (stripped), got {len(value)}")
        if "\x00" in value:
            raise ValueError("label must not contain NUL characters")
        return value


class MarkerAt(Schema):
    id: str = Field(description="the marker entry's id in the stream")
    label: str
    ride_s: float = Field(description="ride second: from the ride's first sample, as the live metrics count it")


class MarkersOut(Schema):
    name: str
    markers: list[MarkerAt]


@router.post(
    "/streams/{name}/markers", response={201: MarkerAt}, auth=PUBLISH,
    summary="Mark the ride's current second (a lap starts there): owner, manager, or a share that grants markers",
)
async def add_marker(request, name: StreamName, body: MarkerIn):
    validate_stream_name(name)
    try:
        marker = await markers.ride_mark(ident=request.auth, name=name, label=body.label)
    except (markers.RideEnded, store.TooManyMarkers) as exc:
        raise HttpError(409, exc.detail) from None
    return Status(201, marker.out())


@router.get("/streams/{name}/markers", response=MarkersOut, auth=READ, summary="A ride's markers, oldest first")
async def list_markers(request, name: StreamName):
    validate_stream_name(name)
    found = await markers.ride_markers(ident=request.auth, name=name)
    return {"name": name, "markers": [m.out() for m in found]}
