"""REST endpoints for streams and shares (django-ninja, async). Thin: parse, ask
streams.access.identity who may, call a service, shape."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Path, Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status
from ninja.security import HttpBearer
from pydantic import Field, WithJsonSchema

from streams.access import identity, plans, rules, shares
from streams.access.identity import AccessError, Identity
from streams.core.handoff import handed_off
from streams.engine.context import redis_context
from streams.live import capacity, sse
from streams.live.follow import access_guard, live_hub
from streams.live.sse import EventsOf
from streams.store import services as store
from streams.store.names import (
    MAX_ENTRIES,
    NAME_RE,
    encode_entries,
    parse_json,
    validate_range_id,
    validate_stream_name,
)

MAX_BATCH = 1000
MAX_PLAN_START_S = 7 * 86400
MAX_OFFSET = 2**31 - 1  # a larger one does not fit an SQL OFFSET


class Caller(HttpBearer):
    """Resolves the caller (streams.access.identity) and checks the token's scope. ``request.auth``
    is then an ``Identity``. Anonymous callers pass only where ``anonymous`` is set."""

    def __init__(self, scope: str, *, anonymous: bool = False) -> None:
        super().__init__()
        self.scope = scope
        self.anonymous = anonymous

    async def __call__(self, request: HttpRequest) -> Identity:
        try:
            ident = await identity.identify_request(request)
            if not self.anonymous:
                rules.require_user(ident)
            rules.require_scope(ident, self.scope)
        except identity.IdentityUnavailable:
            raise  # 503 with its Retry-After (streamsite/api.py)
        except AccessError as exc:
            raise HttpError(exc.status, exc.detail) from None
        return ident

    def authenticate(self, request: HttpRequest, token: str):  # unused: __call__ is async
        raise NotImplementedError


READ = Caller("read", anonymous=True)
READ_AS_USER = Caller("read")
PUBLISH = Caller("publish")
MANAGE = Caller("manage")

# Documents the name rule in the OpenAPI schema; the views still validate with
# validate_stream_name, whose 400 says the rule in words.
StreamName = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": NAME_RE.pattern, "maxLength": 128}),
    Path(description="stream name: 1-128 of A-Z a-z 0-9 _ . : -, starting with a letter or digit"),
]

router = Router(tags=["streams"])
batch_router = Router(tags=["batch"])
shares_router = Router(tags=["shares"])


class StreamOut(Schema):
    name: str
    length: int | None = None
    first_id: str | None = None
    last_id: str | None = None
    owner: str | None = None
    visibility: Literal["public", "private"] | None = None
    ftp: int | None = None
    plan: int | None = None
    plan_start: int | None = None


class StreamListOut(Schema):
    count: int
    streams: list[StreamOut]


class ListQuery(Schema):
    prefix: str = Field("", max_length=128)
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    info: bool = False


class EntryOut(Schema):
    id: str
    data: dict[str, str]


class EventsOut(Schema):
    name: str
    events: list[EntryOut]


class RangeQuery(Schema):
    start: str = "-"
    end: str = "+"
    count: int = Field(100, ge=1, le=1000)


class IdsOut(Schema):
    ids: list[str]


class SettingsIn(Schema):
    visibility: Literal["public", "private"] | None = None
    ftp: int | None = Field(None, ge=1, le=2000, description="watts; null clears it")
    plan: int | None = Field(
        None, ge=1, le=2**63 - 1,
        description="a workout plan's id (GET /api/plans) the caller may read; null clears it and plan_start",
    )
    plan_start: int | None = Field(
        None, ge=0, le=MAX_PLAN_START_S,
        description="the ride second the plan starts at (seconds after the first entry); null: at the first entry",
    )


class NamesIn(Schema):
    names: list[str] = Field(..., max_length=MAX_BATCH)


class InfoBatchOut(Schema):
    streams: dict[str, StreamOut | None]


class ExistsOut(Schema):
    exists: dict[str, bool]


class DeletedOut(Schema):
    deleted: int
    forbidden: list[str]


def fast_json(payload: dict, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def _info_out(info: store.StreamInfo) -> dict:
    meta = info.meta
    return {
        "name": info.name, "length": info.length, "first_id": info.first_id, "last_id": info.last_id,
        "owner": meta.owner, "visibility": meta.visibility, "ftp": meta.ftp, "plan": meta.plan,
        "plan_start": meta.plan_start,
    }


def _validated_names(names: list[str]) -> list[str]:
    for name in names:
        validate_stream_name(name)
    return names


def _refusal(ident: Identity, exc: store.WriteRefused) -> AccessError:
    return rules.write_refusal(ident, exc.name, exc.meta)


@router.get("/streams", response=StreamListOut, auth=READ, summary="List streams")
async def list_streams(request, q: Query[ListQuery]):
    page = await store.streams_list(
        prefix=q.prefix, limit=q.limit, offset=q.offset, reader=rules.stream_reader(request.auth)
    )
    if q.info:
        infos = await store.stream_info_batch(names=page.names)
        streams = [_info_out(infos[n]) if infos[n] else {"name": n} for n in page.names]
    else:
        streams = [{"name": n} for n in page.names]
    # The hot path: plain dicts straight to the C JSON encoder. Validating them through the
    # response schema cost ~1 ms a request for 100 names; the schema still documents it.
    return fast_json({"count": page.count, "streams": streams})


@router.get("/streams/{name}", response={200: StreamOut}, auth=READ, summary="Stream info")
async def get_stream(request, name: StreamName):
    validate_stream_name(name)
    info = (await store.stream_info_batch(names=[name]))[name]
    if info is None or not rules.may_read(request.auth, info.meta):
        raise HttpError(404, f"stream {name!r} not found")
    return _info_out(info)


@router.put(
    "/streams/{name}", response={200: StreamOut, 201: StreamOut}, auth=MANAGE,
    summary="Create an empty stream, or change its visibility, FTP and workout plan (owner or manager)",
)
async def put_stream(request, name: StreamName, body: SettingsIn):
    validate_stream_name(name)
    given = body.model_fields_set
    if body.plan is not None:
        await _check_plan_setting(request.auth, name, body.plan)
    try:
        outcome = await store.stream_settings_update(
            name=name, actor=rules.actor_of(request.auth), visibility=body.visibility,
            ftp=body.ftp if "ftp" in given else "", plan=body.plan if "plan" in given else "",
            plan_start=body.plan_start if "plan_start" in given else "",
        )
    except store.WriteRefused as exc:
        raise _refusal(request.auth, exc) from None
    info = (await store.stream_info_batch(names=[name]))[name]
    out = _info_out(info) if info else {"name": name}
    return Status(201 if outcome.created else 200, out)


async def _check_plan_setting(ident: Identity, name: str, plan_id: int) -> None:
    """Before a plan is put on a stream: the stream's answer first (404 to a stranger, 403 to a
    reader; the write script checks again, atomically), then whether the caller may read the
    plan (400). A stream nobody owns yet is the write script's to decide."""
    meta = (await store.stream_meta(names=[name]))[name]
    if meta.owner_id is not None:
        rules.check_manage(ident, name, owner_id=meta.owner_id, visibility=meta.visibility)
    await plans.check_plan_readable(ident, plan_id)


@router.get("/streams/{name}/events", response=EventsOut, auth=READ, summary="Read a range")
async def read_events(request, name: StreamName, q: Query[RangeQuery]):
    validate_stream_name(name)
    start = validate_range_id(q.start, which="start")
    end = validate_range_id(q.end, which="end")
    await store.check_readable(request.auth, [name])
    entries = await store.stream_range(name=name, start=start, end=end, count=q.count)
    if entries is None:
        raise HttpError(404, f"stream {name!r} not found")
    return {"name": name, "events": [{"id": e.id, "data": e.data} for e in entries]}


PUBLISH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                        {
                            "type": "array",
                            "maxItems": MAX_ENTRIES,
                            "items": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                        },
                    ]
                }
            }
        },
    }
}


def parse_publish_body(body: bytes) -> list[dict[str, str]]:
    """One JSON object or an array of up to 1000 objects → encoded entries."""
    return encode_entries(parse_json(body))


@router.post(
    "/streams/{name}/events",
    response={201: IdsOut},
    auth=PUBLISH,
    summary="Publish entries",
    openapi_extra=PUBLISH_BODY,
)
async def publish_events(request, name: StreamName):
    validate_stream_name(name)
    entries = parse_publish_body(request.body)
    capacity.check_publish_rate(request.auth, len(entries))
    try:
        ids = await store.stream_publish(name=name, entries=entries, actor=rules.actor_of(request.auth))
    except store.WriteRefused as exc:
        raise _refusal(request.auth, exc) from None
    except store.StreamEnded as exc:
        raise HttpError(409, exc.detail) from None
    return Status(201, {"ids": ids})


class EndOut(Schema):
    name: str
    state: Literal["ended"]
    ended_reason: str
    ended_ms: int
    end_id: str


@router.post(
    "/streams/{name}/end", response=EndOut, auth=PUBLISH,
    summary="End a ride: its end marker, then no more entries (owner or manager; docs/rides.md)",
)
async def end_stream(request, name: StreamName):
    validate_stream_name(name)
    try:
        end = await store.stream_end(name=name, reason="owner", actor=rules.actor_of(request.auth))
    except store.WriteRefused as exc:
        raise _refusal(request.auth, exc) from None
    except LookupError as exc:
        raise HttpError(404, str(exc)) from None
    return {"name": name, "state": "ended", "ended_reason": end.reason, "ended_ms": end.ended_ms, "end_id": end.end_id}


@router.delete("/streams/{name}", response={204: None}, auth=MANAGE, summary="Delete a stream")
async def delete_stream(request, name: StreamName):
    validate_stream_name(name)
    outcome = await store.streams_delete(names=[name], actor=rules.actor_of(request.auth))
    if outcome.refused:
        raise _refusal(request.auth, outcome.refused[0])
    if not outcome.deleted:
        raise HttpError(404, f"stream {name!r} not found")
    return Status(204, None)


SSE_DOC = {
    "responses": {
        200: {
            "description": "An endless text/event-stream (see docs/api.md: Live delivery)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
    "parameters": [
        {"in": "header", "name": "Last-Event-ID", "required": False, "schema": {"type": "string"}},
        {"in": "query", "name": "last_event_id", "required": False, "schema": {"type": "string"}},
        {"in": "query", "name": "from", "required": False, "schema": {"type": "string", "enum": ["start", "now"]}},
        {"in": "query", "name": "rate", "required": False,
         "schema": {"type": "number", "minimum": 0.01, "maximum": 1000},
         "description": "Conflation: at most this many events per second per stream, each the newest entry of "
                        "its interval, its data wrapped with a \"conflated\" count (docs/api.md)"},
    ],
}


async def sse_response(request, follow: sse.Follow, events: EventsOf = sse.hub_events) -> StreamingHttpResponse:
    """429/503 at once when a capacity limit is reached (streams/live/capacity.py); else the
    stream: ``events(follow)``, the entries by default."""
    hub = live_hub(await redis_context())
    client = (request.META.get("REMOTE_ADDR") or None)
    admission = capacity.admit_follow(hub=hub, ident=request.auth, client_address=client, names=follow.names)
    try:
        # Handed off: Django closes the response (request_finished closes the database
        # connection auth may have opened) and its request thread before the body streams.
        response = handed_off(sse.EventStream(events(follow), admission, follow), request, content_type="text/event-stream")
    except BaseException:
        admission.release()
        raise
    for header, value in sse.SSE_HEADERS.items():
        response[header] = value
    return response


async def serve_follow(request, follow: sse.Follow, events: EventsOf = sse.hub_events) -> StreamingHttpResponse:
    """Every live follow (entries or ride metrics, one stream or several): the read rule now,
    the access re-check while it lives, then the stream. ``follow`` was validated before any
    access answer."""
    await store.check_readable(request.auth, list(follow.names))
    follow.guard = access_guard(request.auth, follow.names)
    return await sse_response(request, follow, events)


def with_streams_param(doc: dict) -> dict:
    """The OpenAPI extras of a several-streams SSE: the required ``streams`` list first."""
    return {**doc, "parameters": [
        {"in": "query", "name": "streams", "required": True, "schema": {"type": "string"}}, *doc["parameters"],
    ]}


@router.get("/streams/{name}/sse", auth=READ, summary="Follow a stream (SSE)", openapi_extra=SSE_DOC)
async def follow_stream(request, name: StreamName):
    return await serve_follow(request, await sse.follow_for_stream(request, name))


@router.get(
    "/sse", auth=READ, summary="Follow several streams in one connection (SSE)",
    openapi_extra=with_streams_param(SSE_DOC),
)
async def follow_streams(request):
    return await serve_follow(request, await sse.follow_for_streams(request))


@batch_router.post("/streams/info", response=InfoBatchOut, auth=READ, summary="Info for many streams")
async def batch_info(request, body: NamesIn):
    infos = await store.stream_info_batch(names=_validated_names(body.names))
    return {"streams": {
        n: (_info_out(i) if i and rules.may_read(request.auth, i.meta) else None) for n, i in infos.items()
    }}


@batch_router.post("/streams/exists", response=ExistsOut, auth=READ, summary="Which streams exist")
async def batch_exists(request, body: NamesIn):
    infos = await store.stream_info_batch(names=_validated_names(body.names))
    return {"exists": {n: i is not None and rules.may_read(request.auth, i.meta) for n, i in infos.items()}}


@batch_router.post(
    "/streams/delete", response=DeletedOut, auth=MANAGE,
    summary="Delete many streams (only those the caller may manage)",
)
async def batch_delete(request, body: NamesIn):
    outcome = await store.streams_delete(
        names=_validated_names(body.names), actor=rules.actor_of(request.auth)
    )
    # A stream the caller may not even read counts as absent: its name does not leak.
    forbidden = [r.name for r in outcome.refused if rules.may_see(request.auth, r.meta)]
    return {"deleted": len(outcome.deleted), "forbidden": forbidden}


# --- shares ---------------------------------------------------------------------------------
class ShareIn(Schema):
    viewer: str = Field(..., min_length=1, max_length=150)
    may_mark: bool = Field(False, description="the viewer may also add markers to my rides (docs/security.md)")


class ShareOut(Schema):
    owner: str
    viewer: str
    may_mark: bool
    created_at: str


class SharesOut(Schema):
    given: list[ShareOut]
    received: list[ShareOut]


@shares_router.post("/shares", response={201: ShareOut}, auth=MANAGE, summary="Share my streams and workouts")
async def create_share(request, body: ShareIn):
    return Status(201, await shares.share_create(
        owner_id=request.auth.user_id, viewer_name=body.viewer, may_mark=body.may_mark
    ))


@shares_router.get("/shares", response=SharesOut, auth=READ_AS_USER, summary="Shares I gave and received")
async def list_shares(request):
    return await shares.shares_of(user_id=request.auth.user_id)


@shares_router.delete("/shares/{viewer}", response={204: None}, auth=MANAGE, summary="Revoke a share")
async def delete_share(request, viewer: str):
    await shares.share_delete(owner_id=request.auth.user_id, viewer_name=viewer)
    return Status(204, None)
