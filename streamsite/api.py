"""The REST API: one NinjaAPI, error answers as JSON {"detail": ...}."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.db.utils import InterfaceError, OperationalError
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.access.identity import AccessError, IdentityUnavailable
from streams.api import batch_router, shares_router
from streams.api import router as streams_router
from streams.core.compat import already_logged
from streams.core.database import database_outage
from streams.core.descriptors import descriptors, is_out_of_descriptors
from streams.core.errors import InvalidInput
from streams.core.offload import OffloadUnavailable
from streams.engine.nodes import is_redirect
from streams.engine.pool import PoolExhaustedError
from streams.store.services import PublishNotReplicated, StorageFull
from streamsite.server.limits import human_size
from streamsite.views import out_of_descriptors_response
from workouts.api import router as workouts_router
from workouts.plans_api import router as plans_router
from workouts.rides.api import router as rides_router

log = logging.getLogger(__name__)

api = NinjaAPI(
    title="streamsite API",
    version="1.0",
    description="Live workout telemetry on Redis Streams.",
    urls_namespace="api",
)
api.add_router("/", streams_router)
api.add_router("/", rides_router)
api.add_router("/batch", batch_router)
api.add_router("/", workouts_router)
api.add_router("/", shares_router)
api.add_router("/", plans_router)


def _detail(request, status: int, detail: str):
    return api.create_response(request, {"detail": detail}, status=status)


def _describe_validation(errors: list[dict]) -> str:
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc[1:] if len(loc) > 1 and loc[0] in ("q", "payload") else loc)
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


@api.exception_handler(ValidationError)
def on_validation_error(request, exc: ValidationError):
    return _detail(request, 400, _describe_validation(exc.errors))


@api.exception_handler(InvalidInput)
def on_invalid_input(request, exc: InvalidInput):
    return _detail(request, exc.status, str(exc))


@api.exception_handler(AccessError)
def on_access_error(request, exc: AccessError):
    response = _detail(request, exc.status, exc.detail)
    retry_after = getattr(exc, "retry_after", None)  # a rate limit's, a database outage's
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if getattr(exc, "close_connection", False):  # out of descriptors: give this one back
        response["Connection"] = "close"
        response._has_been_logged = True  # counted and tallied (capacity.check_descriptors), not one line each
    if isinstance(exc, IdentityUnavailable):
        already_logged(response)  # the outage is logged once per interval (streams/core/database.py)
    return response


@api.exception_handler(OSError)
@api.exception_handler(DatabaseError)
def on_out_of_descriptors(request, exc):
    """A request that needed one more file descriptor (a database socket, a file) and got
    EMFILE: 503 and the connection closed. Any other such error is the 500 it was."""
    if not descriptors().explains(exc):
        raise exc
    return out_of_descriptors_response(request, exc)


@api.exception_handler(RequestDataTooBig)
def on_too_big(request, exc):
    limit = human_size(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    return _detail(request, 413, f"request body is larger than the limit of {limit}")


@api.exception_handler(MultiPartParserError)
def on_bad_multipart(request, exc):
    return _detail(request, 400, f"request body is not valid multipart/form-data: {exc}")


@api.exception_handler(AuthenticationError)
def on_auth_error(request, exc):
    return _detail(request, 401, "authentication required: send Authorization: Bearer <token>")


@api.exception_handler(HttpError)
def on_http_error(request, exc: HttpError):
    return _detail(request, exc.status_code, str(exc))


@api.exception_handler(RedisConnectionError)
@api.exception_handler(RedisTimeoutError)
def on_redis_unavailable(request, exc):
    # The exception's text can name the Redis address: it stays in the server's log. A pool
    # exhausted is said as such (its text is ours: the pool's name and size, no address).
    if is_out_of_descriptors(exc):  # "Error 24 connecting to ...": not Redis's fault
        return out_of_descriptors_response(request, exc)
    log.warning("redis unavailable on %s: %s", request.path, exc)
    if isinstance(exc, PoolExhaustedError):
        return _detail(request, 503, f"redis unavailable: {exc}")
    return _detail(request, 503, "redis unavailable: try again later")


@api.exception_handler(RedisError)
def on_redis_moving(request, exc):
    """A cluster mid-failover or mid-reshard for longer than the node map's redirect deadline
    (CLUSTERDOWN, MOVED, TRYAGAIN, READONLY): unavailable, try again. Any other Redis error
    is a bug, and stays the 500 it is."""
    if not is_redirect(exc):
        raise exc
    return on_redis_unavailable(request, exc)


@api.exception_handler(StorageFull)
@api.exception_handler(OutOfMemoryError)
def on_storage_full(request, exc):
    """Redis at its maxmemory with noeviction: the write was refused whole (no partial write)."""
    if isinstance(exc, OutOfMemoryError):
        log.warning("redis refused a write at its memory limit on %s: %s", request.path, exc)
    return _detail(request, 503, StorageFull.DETAIL)


@api.exception_handler(PublishNotReplicated)
def on_not_replicated(request, exc: PublishNotReplicated):
    """PUBLISH_DURABILITY=replicated: written on the primary, not confirmed by a replica in time.
    No Retry-After: the entries exist, a blind retry would store them twice."""
    return api.create_response(request, {"detail": exc.detail, "ids": exc.ids}, status=503)


@api.exception_handler(OffloadUnavailable)
def on_offload_unavailable(request, exc: OffloadUnavailable):
    return _detail(request, 503, str(exc))


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def on_database_unavailable(request, exc):
    """A view's own database work (workouts, shares, tokens) found the database unreachable:
    503 with Retry-After, logged once per interval (streams/core/database.py), never a 500.
    Out of descriptors is this process's shortage, not the database's: not an outage."""
    if descriptors().explains(exc):
        return out_of_descriptors_response(request, exc)
    database_outage.noticed(exc)
    response = _detail(request, 503, "database unavailable: try again later")
    response["Retry-After"] = "5"
    return already_logged(response)
