"""REST endpoints for streams (django-ninja, async). Thin: parse, call a service, shape."""

from __future__ import annotations

import json
from typing import Annotated

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Path, Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status
from ninja.security import HttpBearer
from pydantic import Field, WithJsonSchema

from streams import operations, sse
from streams.auth import writer
from streams.names import MAX_ENTRIES, NAME_RE, InvalidInput, encode_entries, validate_range_id, validate_stream_name

MAX_BATCH = 1000
MAX_OFFSET = 2**31 - 1  # a larger one does not fit an SQL OFFSET (was a 500 on /api/workouts)


class WriteAuth(HttpBearer):
    """A valid API token (Authorization: Bearer ...) or a staff session."""

    async def __call__(self, request: HttpRequest):
        user = await writer(request)
        if user is not None:
            return user
        if request.headers.get("Authorization"):
            raise HttpError(401, "invalid or inactive API token")
        raise HttpError(401, "authentication required: send Authorization: Bearer <token>")

    def authenticate(self, request: HttpRequest, token: str):  # unused: __call__ is async
        raise NotImplementedError


class ReadAuth(WriteAuth):
    """Anyone when STREAMS_PUBLIC_READ is true; otherwise as for writes."""

    async def __call__(self, request: HttpRequest):
        if settings.STREAMS_PUBLIC_READ:
            return True
        return await super().__call__(request)


# Documents the name rule in the OpenAPI schema; the views still validate with
# validate_stream_name, whose 400 says the rule in words.
StreamName = Annotated[
    str,
    WithJsonSchema({"type": "string", "pattern": NAME_RE.pattern, "maxLength": 128}),
    Path(description="stream name: 1-128 of A-Z a-z 0-9 _ . : -, starting with a letter or digit"),
]

router = Router(tags=["streams"])
batch_router = Router(tags=["batch"])


class StreamOut(Schema):
    name: str
    length: int | None = None
    first_id: str | None = None
    last_id: str | None = None


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


class NamesIn(Schema):
    names: list[str] = Field(..., max_length=MAX_BATCH)


class InfoBatchOut(Schema):
    streams: dict[str, StreamOut | None]


class ExistsOut(Schema):
    exists: dict[str, bool]


class DeletedOut(Schema):
    deleted: int


def fast_json(payload: dict, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def _info_out(info: operations.StreamInfo) -> dict:
    return {"name": info.name, "length": info.length, "first_id": info.first_id, "last_id": info.last_id}


def _validated_names(names: list[str]) -> list[str]:
    for name in names:
        validate_stream_name(name)
    return names


@router.get("/streams", response=StreamListOut, auth=ReadAuth(), summary="List streams")
async def list_streams(request, q: Query[ListQuery]):
    page = await operations.streams_list(prefix=q.prefix, limit=q.limit, offset=q.offset)
    if q.info:
        infos = await operations.stream_info_batch(names=page.names)
        streams = [_info_out(infos[n]) if infos[n] else {"name": n} for n in page.names]
    else:
        streams = [{"name": n} for n in page.names]
    # The hot path: plain dicts straight to the C JSON encoder. Validating them through the
    # response schema cost ~1 ms a request for 100 names; the schema still documents it.
    return fast_json({"count": page.count, "streams": streams})


@router.get("/streams/{name}", response={200: StreamOut}, auth=ReadAuth(), summary="Stream info")
async def get_stream(request, name: StreamName):
    validate_stream_name(name)
    info = (await operations.stream_info_batch(names=[name]))[name]
    if info is None:
        raise HttpError(404, f"stream {name!r} not found")
    return _info_out(info)


@router.get("/streams/{name}/events", response=EventsOut, auth=ReadAuth(), summary="Read a range")
async def read_events(request, name: StreamName, q: Query[RangeQuery]):
    validate_stream_name(name)
    start = validate_range_id(q.start, which="start")
    end = validate_range_id(q.end, which="end")
    entries = await operations.stream_range(name=name, start=start, end=end, count=q.count)
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
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    return encode_entries(payload)


@router.post(
    "/streams/{name}/events",
    response={201: IdsOut},
    auth=WriteAuth(),
    summary="Publish entries",
    openapi_extra=PUBLISH_BODY,
)
async def publish_events(request, name: StreamName):
    validate_stream_name(name)
    entries = parse_publish_body(request.body)
    ids = await operations.stream_publish(name=name, entries=entries)
    return Status(201, {"ids": ids})


@router.delete("/streams/{name}", response={204: None}, auth=WriteAuth(), summary="Delete a stream")
async def delete_stream(request, name: StreamName):
    validate_stream_name(name)
    if not await operations.streams_delete(names=[name]):
        raise HttpError(404, f"stream {name!r} not found")
    return Status(204, None)


SSE_DOC = {
    "responses": {
        200: {
            "description": "An endless text/event-stream (see README: Live delivery)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
    "parameters": [
        {"in": "header", "name": "Last-Event-ID", "required": False, "schema": {"type": "string"}},
        {"in": "query", "name": "last_event_id", "required": False, "schema": {"type": "string"}},
        {"in": "query", "name": "from", "required": False, "schema": {"type": "string", "enum": ["start", "now"]}},
    ],
}


async def sse_response(follow: sse.Follow) -> StreamingHttpResponse:
    # Auth may have opened a DB connection in this request's thread: a stream that lasts
    # hours must not hold it.
    await sync_to_async(close_old_connections)()
    sse.release_request_thread()
    response = StreamingHttpResponse(sse.event_source(follow), content_type="text/event-stream")
    for header, value in sse.SSE_HEADERS.items():
        response[header] = value
    return response


@router.get("/streams/{name}/sse", auth=ReadAuth(), summary="Follow a stream (SSE)", openapi_extra=SSE_DOC)
async def follow_stream(request, name: StreamName):
    return await sse_response(await sse.follow_for_stream(request, name))


@router.get(
    "/sse",
    auth=ReadAuth(),
    summary="Follow several streams in one connection (SSE)",
    openapi_extra={**SSE_DOC, "parameters": [
        {"in": "query", "name": "streams", "required": True, "schema": {"type": "string"}},
        *SSE_DOC["parameters"],
    ]},
)
async def follow_streams(request):
    return await sse_response(await sse.follow_for_streams(request))


@batch_router.post("/streams/info", response=InfoBatchOut, auth=ReadAuth(), summary="Info for many streams")
async def batch_info(request, body: NamesIn):
    infos = await operations.stream_info_batch(names=_validated_names(body.names))
    return {"streams": {n: (_info_out(i) if i else None) for n, i in infos.items()}}


@batch_router.post("/streams/exists", response=ExistsOut, auth=ReadAuth(), summary="Which streams exist")
async def batch_exists(request, body: NamesIn):
    return {"exists": await operations.streams_exist(names=_validated_names(body.names))}


@batch_router.post("/streams/delete", response=DeletedOut, auth=WriteAuth(), summary="Delete many streams")
async def batch_delete(request, body: NamesIn):
    return {"deleted": await operations.streams_delete(names=_validated_names(body.names))}

