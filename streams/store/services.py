"""Stream services: every interface (API, admin, commands, hub) goes through these.

Each function borrows one client from the main pool of the node that serves the stream
(streams/engine/nodes.py) and makes one round trip, except where noted; calls over many streams send
one pipeline per node, the nodes concurrently. Writes run as Lua scripts that check the actor against the stream's owner inside
Redis (streams/store/scripts.py).
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from streams.access import identity, rules
from streams.access.identity import SYSTEM, AccessError, Actor
from streams.access.rules import Reader
from streams.core.instruments import (
    EVENTS_PUBLISHED,
    PUBLISHES_REFUSED,
    PUBLISHES_UNREPLICATED,
    timed,
)
from streams.engine.batching import NotReplicated, replicas_acked
from streams.engine.context import redis_context
from streams.engine.nodes import is_transient
from streams.store.keys import key_layout
from streams.store.names import MAX_MARKERS, entry_fields, validate_stream_name
from streams.store.positions import last_generated_id
from streams.store.registry import RegistryPage, StreamRegistry
from streams.store.scripts import (
    ARCHIVE_DELETE_LUA,
    ARCHIVED_AS_LUA,
    CLAIM_LUA,
    DELETE_LUA,
    END_LUA,
    MARKER_LUA,
    PUBLISH_LUA,
    SAFE_RANGE_LUA,
    SETTINGS_LUA,
    UNLOCK_LUA,
)
from streams.store.scripts import registered as script

log = logging.getLogger(__name__)

EVENTS_MAXLEN = 10_000  # deletion notices kept for the other processes' feeds (streams/live/deletions.py)


@dataclass(frozen=True)
class StreamMeta:
    """Who owns a stream and how it is shared; all None for a stream nobody owns."""

    owner_id: int | None = None
    owner: str | None = None
    visibility: str | None = None
    ftp: int | None = None
    created_ms: int | None = None
    ended_ms: int | None = None  # the ride's end (docs/rides.md): set with its end marker
    ended_reason: str | None = None  # "owner" or "idle"
    workout_id: int | None = None  # the workout the ended ride was archived as
    plan: int | None = None  # a workout plan's id (the workouts app's; checked there: streams/access/plans.py)
    plan_start: int | None = None  # the ride second the plan starts at; None: at the first entry


NO_META = StreamMeta()
META_FIELDS = (
    "owner", "owner_name", "visibility", "ftp", "created_ms", "ended_ms", "ended_reason", "workout_id", "plan",
    "plan_start",
)


@dataclass(frozen=True)
class StreamInfo:
    name: str
    length: int
    first_id: str | None
    last_id: str | None
    meta: StreamMeta = NO_META


@dataclass(frozen=True)
class StreamEntry:
    id: str
    data: dict[str, str]


class WriteRefused(Exception):
    """The stream belongs to someone else (or to nobody, and the actor is no manager)."""

    def __init__(self, name: str, meta: StreamMeta) -> None:
        super().__init__(f"stream {name!r} belongs to someone else")
        self.name = name
        self.meta = meta


class StreamEnded(Exception):
    """The ride ended (docs/rides.md): nothing more is published to its stream (409)."""

    def __init__(self, name: str, ended_ms: int, reason: str) -> None:
        self.name, self.ended_ms, self.reason = name, ended_ms, reason
        self.detail = (
            f"stream {name!r} is in state ended ({reason or 'owner'}): a ride that ended stays ended; "
            "publish to a new stream name, or delete the stream first"
        )
        super().__init__(self.detail)


@dataclass(frozen=True)
class RideEnd:
    """A ride's end: when (ms, Redis' clock), why (owner, idle) and its end marker's id."""

    name: str
    ended_ms: int
    reason: str
    end_id: str
    now: bool  # this call ended it (False: it had ended before)


class StreamQuotaExceeded(AccessError):
    """Creating one more stream would pass the owner's STREAMS_MAX_PER_USER (429)."""

    def __init__(self, owned: int, limit: int) -> None:
        super().__init__(
            429, f"you own {owned} streams, the limit (STREAMS_MAX_PER_USER={limit}): delete one to create another"
        )


class StorageFull(Exception):
    """Redis refused a write at its ``maxmemory`` (``noeviction``): nothing was written (a
    script's first write is refused before it writes anything). The API answers 503."""

    DETAIL = "storage full: the stream store reached its memory limit; writes are refused until space is freed"

    def __init__(self) -> None:
        super().__init__(self.DETAIL)


class PublishNotReplicated(Exception):
    """``PUBLISH_DURABILITY=replicated`` and no replica confirmed the entries within
    ``PUBLISH_REPLICA_TIMEOUT_MS``: they *were* written on the primary (``ids``), but an
    unplanned failover may lose them. The API answers 503 with the ids."""

    def __init__(self, ids: list[str], *, timeout_ms: int) -> None:
        self.ids = ids
        self.timeout_ms = timeout_ms
        self.detail = (
            f"not replicated within {timeout_ms} ms: the entries were written on the primary but no replica "
            "confirmed them, so a failover may lose them (ids: what was written; publishing again may store it twice)"
        )
        super().__init__(self.detail)


@dataclass(frozen=True)
class DeleteOutcome:
    deleted: list[str]
    refused: list[WriteRefused]


@dataclass(frozen=True)
class SettingsOutcome:
    created: bool
    meta: StreamMeta


def default_visibility() -> str:
    return "public" if settings.STREAMS_PUBLIC_READ else "private"


def _int_or_none(value) -> int | None:
    return int(value) if value else None


def _meta_from(values: list) -> StreamMeta:
    """The metadata from an HMGET of ``META_FIELDS`` (a shorter list: the fields after it unset)."""
    owner_id, owner, visibility, ftp, created_ms, ended_ms, ended_reason, workout_id, plan, plan_start = (
        list(values) + [None] * (len(META_FIELDS) - len(values))
    )
    return StreamMeta(
        owner_id=_int_or_none(owner_id),
        owner=owner or None,
        visibility=visibility or None,
        ftp=_int_or_none(ftp),
        created_ms=_int_or_none(created_ms),
        ended_ms=_int_or_none(ended_ms),
        ended_reason=ended_reason or None,
        workout_id=_int_or_none(workout_id),
        plan=_int_or_none(plan),
        plan_start=None if plan_start in (None, "") else int(plan_start),
    )


def _refusal_meta(owner_id: str, visibility: str) -> StreamMeta:
    return StreamMeta(owner_id=int(owner_id) if owner_id else None, visibility=visibility or None)


def _write_keys(ctx, name: str) -> list[str]:
    keys = key_layout(ctx.config).stream_keys(name)
    return [keys.stream, keys.meta, *StreamRegistry.of(ctx).write_keys(keys.bucket)]


async def _run_script(ctx, source: str, keys: list[str], args: list[str]):
    """One write script on the node of its keys (all in one slot), following redirects."""
    return await ctx.nodes.run(keys[0], lambda r: script(source)(keys=keys, args=args, client=r))


def _actor_args(name: str, actor: Actor) -> list[str]:
    return [name, "" if actor.user_id is None else str(actor.user_id), actor.username, "1" if actor.manager else "0"]


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def _known(names: list[str], name: str) -> bool:
    at = bisect.bisect_left(names, name)
    return at < len(names) and names[at] == name


async def check_stream_quota(ctx, name: str, actor: Actor) -> None:
    """StreamQuotaExceeded when writing ``name`` would create a stream past the actor's
    STREAMS_MAX_PER_USER. A name this process's registry copy holds is no creation: no Redis
    call (the hot path). Otherwise the registry is brought up to date (one GET per bucket,
    re-reading changed buckets) and the actor's streams counted from its access index
    (name -> owner, kept by every write script). Not atomic with the create: concurrent first
    writes of one owner may each pass, an overshoot of at most the number of creates in
    flight; a stream deleted elsewhere that this process still lists is re-created uncounted.
    Stream managers (and actors without a user) are exempt."""
    if actor.user_id is None or actor.manager:
        return
    registry = StreamRegistry.of(ctx)
    if _known(registry.cached_names, name) or _known(await registry.names(), name):
        return
    owner_id = actor.user_id
    mine = Reader(key=("owned-by", owner_id), may_read=lambda owner, _visibility: owner == owner_id)
    owned = (await registry.page(limit=1, reader=mine)).count
    limit = settings.STREAMS_MAX_PER_USER
    if owned >= limit:
        PUBLISHES_REFUSED.labels(reason="streams_per_user").inc()
        raise StreamQuotaExceeded(owned, limit)


def is_storage_full(exc: BaseException) -> bool:
    """Redis refused a write at its maxmemory: ``OOM`` as a command's error, or inside a script
    (a ResponseError "Error running script ... -OOM command not allowed ...")."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc)
    )


def storage_full(exc: ResponseError) -> StorageFull:
    """Count a write refused at Redis' maxmemory; the error the API answers 503 with."""
    log.warning("redis refused a write at its memory limit: %s", exc)
    PUBLISHES_REFUSED.labels(reason="storage_full").inc()
    return StorageFull()


# --- writes ---------------------------------------------------------------------------------
@timed("publish")
async def stream_publish(*, name: str, entries: list[dict[str, str]], actor: Actor = SYSTEM) -> list[str]:
    """Append entries (already encoded) atomically, checking the actor against the owner; the
    first publish makes the actor the owner (visibility: public when STREAMS_PUBLIC_READ, else
    private). Trims approximately to STREAM_MAXLEN. One script call, sent in one pipeline with
    the other publishes made meanwhile (streams/engine/batching.py). Raises ``WriteRefused``;
    with ``PUBLISH_DURABILITY=replicated``, ``PublishNotReplicated`` (naming the ids written) when
    no replica confirmed the entries in time."""
    validate_stream_name(name)
    ctx = await redis_context()
    await check_stream_quota(ctx, name, actor)
    args = [*_actor_args(name, actor), default_visibility(), str(ctx.config.stream_maxlen or 0), _now_ms(),
            str(len(entries))]
    for fields in entries:
        args.append(str(len(fields)))
        for key, value in fields.items():
            args += (key, value)
    keys = _write_keys(ctx, name)
    try:
        reply, unreplicated = await _send_publish(ctx, keys, args), None
    except NotReplicated as exc:  # written, but no replica has it yet
        reply, unreplicated = exc.reply, exc
    if reply[0] == 0:
        raise WriteRefused(name, _refusal_meta(reply[1], reply[2]))
    if reply[0] == 2:
        raise StreamEnded(name, int(reply[1]), reply[2])
    if reply[1]:
        ctx.streams_changed([name])
    ids = reply[2:]
    EVENTS_PUBLISHED.inc(len(ids))
    if unreplicated is not None:
        PUBLISHES_UNREPLICATED.inc()
        raise PublishNotReplicated(ids, timeout_ms=unreplicated.timeout_ms)
    return ids


async def _send_publish(ctx, keys: list[str], args: list[str]) -> list:
    """The publish script's reply: sent through the node's batcher, or alone following its
    slot when it moved (a reshard, a failover). ``NotReplicated`` passes through."""
    try:
        return await ctx.nodes.for_key(keys[0]).publishes.call(script(PUBLISH_LUA), keys, args)
    except Exception as exc:
        if is_storage_full(exc):
            raise storage_full(exc) from None
        if not is_transient(exc) or not ctx.nodes.cluster:
            raise
    try:
        return await ctx.nodes.run(keys[0], lambda r: _publish_alone(r, keys, args, ctx.config.replica_wait_ms))
    except ResponseError as again:
        if is_storage_full(again):
            raise storage_full(again) from None
        raise


async def _publish_alone(r, keys: list[str], args: list[str], replica_wait_ms: int | None) -> list:
    """One publish on ``r``, waiting for a replica as the batcher would (``WAIT 1``)."""
    reply = await script(PUBLISH_LUA)(keys=keys, args=args, client=r)
    if replica_wait_ms is not None and await replicas_acked(r, replica_wait_ms) < 1:
        raise NotReplicated(reply, timeout_ms=replica_wait_ms)
    return reply


@timed("stream_settings")
async def stream_settings_update(
    *, name: str, actor: Actor, visibility: str | None = None, ftp: int | None | str = "",
    plan: int | None | str = "", plan_start: int | None | str = "",
) -> SettingsOutcome:
    """Create an empty stream owned by the actor, or change its visibility / FTP / workout plan
    and the plan's start (each: ``""`` keeps it, ``None`` clears it; clearing the plan clears
    its start). The caller checked that the actor may read the plan (streams/access/plans.py).
    Raises ``WriteRefused``."""
    validate_stream_name(name)
    ctx = await redis_context()
    if plan is None:
        plan_start = None
    args = [*_actor_args(name, actor), visibility or "", _setting_arg(ftp), _now_ms(), default_visibility(),
            _setting_arg(plan), _setting_arg(plan_start)]
    await check_stream_quota(ctx, name, actor)
    try:
        reply = await _run_script(ctx, SETTINGS_LUA, _write_keys(ctx, name), args)
    except ResponseError as exc:
        if is_storage_full(exc):
            raise storage_full(exc) from None
        raise
    if reply[0] == 0:
        raise WriteRefused(name, _refusal_meta(reply[1], reply[2]))
    ctx.streams_changed([name])
    _, created, owner_id, visibility, ftp_now, owner_name, plan_now, plan_start_now = reply
    return SettingsOutcome(created=bool(created), meta=_meta_from(
        [owner_id, owner_name, visibility, ftp_now, None, None, None, None, plan_now, plan_start_now]
    ))


def _setting_arg(value: int | None | str) -> str:
    """A numeric setting for SETTINGS_LUA: '' keeps it, '-' clears it, else the number."""
    return "" if value == "" else ("-" if value is None else str(int(value)))


@timed("stream_end")
async def stream_end(*, name: str, reason: str = "owner", actor: Actor = SYSTEM, if_last: str = "") -> RideEnd | None:
    """End a ride (docs/rides.md): its end marker ``{"_end": reason}`` and ``ended_ms`` /
    ``ended_reason`` in its metadata, owner-checked like a publish, in one script. Ending an
    ended ride answers its existing end. With ``if_last`` (an entry id), only while that is
    still the stream's last entry (None otherwise). Raises ``WriteRefused``, ``LookupError``
    for a missing stream."""
    validate_stream_name(name)
    ctx = await redis_context()
    reply = await _run_script(ctx, END_LUA, _write_keys(ctx, name), [*_actor_args(name, actor), reason, if_last])
    if reply[0] == 0:
        raise WriteRefused(name, _refusal_meta(reply[1], reply[2]))
    if reply[0] == -1:
        raise LookupError(f"stream {name!r} not found")
    if reply[0] == -2:
        return None
    ctx.streams_changed([name])
    _, now, ended_ms, reason, end_id = reply
    return RideEnd(name=name, ended_ms=int(ended_ms), reason=reason, end_id=end_id, now=bool(now))


@dataclass(frozen=True)
class Marker:
    """A marker on a ride (docs/rides.md): its entry id, label and ride second."""

    id: str
    label: str
    ride_s: float

    def out(self) -> dict:
        return {"id": self.id, "label": self.label, "ride_s": self.ride_s}


class TooManyMarkers(Exception):
    """The ride has MAX_MARKERS markers already (409)."""

    def __init__(self, name: str, count: int) -> None:
        self.detail = f"stream {name!r} has {count} markers, the most a ride may have"
        super().__init__(self.detail)


@timed("stream_mark")
async def stream_mark(
    *, name: str, label: str, owner_id: int | None, clock: tuple[int, int] | None
) -> Marker:
    """Write a marker entry ``{"_marker": label, "_ride_s": s}`` and add it to the metadata's
    list, in one script, only while the stream's owner is still ``owner_id`` (the owner the
    caller's right was decided for: ``rules.check_mark``). ``clock`` is (ride time in ms at the
    newest sample, that sample's entry ms): the marker's ride second runs on from there by
    Redis' clock; None (no sample yet) is ride second 0. Raises ``LookupError`` (missing),
    ``WriteRefused`` (changed hands), ``StreamEnded``, ``TooManyMarkers``."""
    validate_stream_name(name)
    ctx = await redis_context()
    keys = key_layout(ctx.config).stream_keys(name)
    base, base_ms = ("", "") if clock is None else (str(int(clock[0])), str(int(clock[1])))
    args = ["" if owner_id is None else str(owner_id), label, base, base_ms, str(MAX_MARKERS),
            str(ctx.config.stream_maxlen or 0)]
    try:
        reply = await _run_script(ctx, MARKER_LUA, [keys.stream, keys.meta], args)
    except ResponseError as exc:
        if is_storage_full(exc):
            raise storage_full(exc) from None
        raise
    if reply[0] == -1:
        raise LookupError(f"stream {name!r} not found")
    if reply[0] == 0:
        raise WriteRefused(name, _refusal_meta(reply[1], reply[2]))
    if reply[0] == 2:
        raise StreamEnded(name, int(reply[1]), reply[2])
    if reply[0] == 3:
        raise TooManyMarkers(name, int(reply[1]))
    return Marker(id=reply[1], label=label, ride_s=float(reply[2]))


@timed("stream_markers")
async def stream_markers(*, name: str) -> list[Marker]:
    """The markers set on a ride, in the order they were set (from its metadata)."""
    ctx = await redis_context()
    meta = key_layout(ctx.config).stream_keys(name).meta
    stored = await ctx.nodes.run(meta, lambda r: r.hget(meta, "markers"))
    return [Marker(id=i, label=label, ride_s=float(s)) for i, s, label in json.loads(stored or "[]")]


async def stream_archived_as(*, name: str, workout_id: int) -> bool:
    """Record in an ended ride's metadata the workout it was archived as (False: the stream
    has no metadata any more)."""
    ctx = await redis_context()
    meta = key_layout(ctx.config).stream_keys(name).meta
    recorded = await _run_script(ctx, ARCHIVED_AS_LUA, [meta], [str(workout_id)])
    ctx.streams_changed([name])
    return bool(recorded)


async def archive_lock_take(*, name: str, holder: str, ttl_ms: int) -> bool:
    """Take the lock of archiving ``name`` (SET NX PX): True for the one taker."""
    ctx = await redis_context()
    lock = key_layout(ctx.config).archive_lock(name)
    return bool(await ctx.nodes.run(lock, lambda r: r.set(lock, holder, nx=True, px=ttl_ms)))


async def archive_lock_release(*, name: str, holder: str) -> None:
    """Let go of the archive lock ``holder`` took (after a failed archive: the next try may
    come at once)."""
    ctx = await redis_context()
    lock = key_layout(ctx.config).archive_lock(name)
    await _run_script(ctx, UNLOCK_LUA, [lock], [holder])


@timed("stream_claim")
async def stream_claim(*, name: str, user_id: int, username: str) -> bool:
    """Make a user the owner of an existing stream (``claim_stream``). False when missing."""
    validate_stream_name(name)
    ctx = await redis_context()
    reply = await _run_script(ctx, CLAIM_LUA, _write_keys(ctx, name), [name, str(user_id), username, default_visibility()])
    ctx.streams_changed([name])
    return bool(reply[0])


@timed("delete")
async def streams_delete(*, names: list[str], actor: Actor = SYSTEM) -> DeleteOutcome:
    """Delete the streams the actor may manage, with their metadata and registry entries, each
    checked and deleted atomically; one round trip. Names the actor may not manage come back
    in ``refused``. Live listeners of deleted streams, in every process, get ``deleted``."""
    if not names:
        return DeleteOutcome(deleted=[], refused=[])
    ctx = await redis_context()
    unique = list(dict.fromkeys(names))
    delete = script(DELETE_LUA)
    keys = [_write_keys(ctx, name) for name in unique]
    replies = [item[0] for item in await ctx.nodes.pipelined(
        [k[0] for k in keys],
        lambda pipe, i: delete(keys=keys[i], args=_actor_args(unique[i], actor), client=pipe),
    )]
    deleted = [n for n, reply in zip(unique, replies) if reply[0] == 1 and reply[1] == 1]
    refused = [WriteRefused(n, _refusal_meta(reply[1], reply[2])) for n, reply in zip(unique, replies) if reply[0] == 0]
    ctx.streams_changed([n for n in unique if n not in deleted])
    if deleted:
        ctx.streams_changed(deleted, deleted=True)  # this process's listeners end now
        await announce_deleted(ctx, deleted)
    return DeleteOutcome(deleted=deleted, refused=refused)


async def announce_deleted(ctx, names: list[str]) -> None:
    """Tell every other process's hub (streams/live/deletions.py) that ``names`` are gone."""
    fields = {"kind": "deleted", "names": json.dumps(names), "origin": ctx.origin}
    key = key_layout(ctx.config).events
    try:
        await ctx.nodes.run(key, lambda r: r.xadd(key, fields, maxlen=EVENTS_MAXLEN, approximate=True))
    except RedisError as exc:  # the delete itself succeeded; other processes' listeners
        log.warning("could not announce the deletion of %d streams: %s", len(names), exc)  # time out


# --- reads ----------------------------------------------------------------------------------
async def _per_stream(names: list[str], queue, *, raise_on_error: bool = True) -> list:
    """``queue(pipe, keys)`` for each stream, pipelined (not a transaction): one round trip per
    node. The replies, flat, in order."""
    if not names:
        return []
    ctx = await redis_context()
    keys = [key_layout(ctx.config).stream_keys(name) for name in names]
    per_item = await ctx.nodes.pipelined([k.stream for k in keys], lambda pipe, i: queue(pipe, keys[i]),
                                         raise_on_error=raise_on_error)
    return [reply for replies in per_item for reply in replies]


@timed("stream_meta")
async def stream_meta(*, names: list[str]) -> dict[str, StreamMeta]:
    """Owner, visibility and FTP of each stream (one HMGET each, one round trip)."""
    replies = await _per_stream(names, lambda pipe, keys: pipe.hmget(keys.meta, META_FIELDS))
    return {name: _meta_from(values) for name, values in zip(names, replies)}


@timed("stream_meta_each")
async def stream_meta_each(*, names: list[str], timeout: float) -> dict[str, StreamMeta | BaseException]:
    """``stream_meta`` for a reader that can wait for another try: one pipeline per node, each
    under ``timeout``; a stream whose node failed or did not answer in time (a failover) maps
    to that error instead of holding up the others."""
    if not names:
        return {}
    ctx = await redis_context()
    keys = [key_layout(ctx.config).stream_keys(name) for name in names]
    replies = await ctx.nodes.per_node(
        [k.stream for k in keys], lambda pipe, i: pipe.hmget(keys[i].meta, META_FIELDS), timeout=timeout
    )
    return {name: _meta_or_error(reply) for name, reply in zip(names, replies)}


def _meta_or_error(reply: list | BaseException) -> StreamMeta | BaseException:
    if isinstance(reply, BaseException):
        return reply
    (values,) = reply
    return values if isinstance(values, BaseException) else _meta_from(values)

async def check_readable(ident: identity.Identity, names: list[str]) -> None:
    """AccessError (404) naming the first stream the caller may not read (one round trip for
    all): the read rule of the API, the live SSE and the pages."""
    metas = await stream_meta(names=names)
    for name in names:
        meta = metas[name]
        rules.check_read(ident, name, meta)


@timed("stream_info_batch")
async def stream_info_batch(*, names: list[str]) -> dict[str, StreamInfo | None]:
    """Length, first/last id and metadata for many streams: one XINFO STREAM and one HMGET
    each, one round trip. A missing stream is None."""
    def queue(pipe, keys):
        pipe.xinfo_stream(keys.stream)
        pipe.hmget(keys.meta, META_FIELDS)

    replies = await _per_stream(names, queue, raise_on_error=False)
    result: dict[str, StreamInfo | None] = {}
    for i, name in enumerate(names):
        reply, meta = replies[2 * i], replies[2 * i + 1]
        if isinstance(meta, ResponseError):
            raise meta
        if isinstance(reply, ResponseError):
            if _is_missing_or_wrong_type(reply):
                result[name] = None
                continue
            raise reply
        result[name] = _info_from_xinfo(name, reply, _meta_from(meta))
    return result


@dataclass(frozen=True)
class StreamBounds:
    """What a resume needs to know it missed nothing: the oldest entry Redis still keeps, the
    newest id the stream ever generated, and whether any entry was ever removed (trimmed by
    MAXLEN/XTRIM, or deleted; None when the server does not say: Redis < 7)."""

    first_id: str | None
    last_generated_id: str
    removed: bool | None


@timed("stream_bounds")
async def stream_bounds(*, names: list[str]) -> dict[str, StreamBounds | None]:
    """Each stream's bounds (one XINFO STREAM each, one round trip); a missing stream is None."""
    replies = await _per_stream(names, lambda pipe, keys: pipe.xinfo_stream(keys.stream), raise_on_error=False)
    result: dict[str, StreamBounds | None] = {}
    for name, reply in zip(names, replies):
        if isinstance(reply, ResponseError):
            if _is_missing_or_wrong_type(reply):
                result[name] = None
                continue
            raise reply
        first = reply.get("first-entry")
        added = reply.get("entries-added")
        result[name] = StreamBounds(
            first_id=first[0] if first else None,
            last_generated_id=reply["last-generated-id"],
            removed=None if added is None else int(added) > int(reply["length"]),
        )
    return result


def _is_missing_or_wrong_type(error: ResponseError) -> bool:
    text = str(error).lower()
    return "no such key" in text or "wrongtype" in text


def _info_from_xinfo(name: str, reply: dict, meta: StreamMeta) -> StreamInfo:
    first = reply.get("first-entry")
    last = reply.get("last-entry")
    return StreamInfo(
        name=name,
        length=int(reply["length"]),
        first_id=first[0] if first else None,
        last_id=last[0] if last else None,
        meta=meta,
    )


@timed("range_read")
async def stream_range(
    *, name: str, start: str = "-", end: str = "+", count: int | None = 100
) -> list[StreamEntry] | None:
    """Entries between two ids (inclusive, ``(`` for exclusive); None when the stream is missing."""
    ctx = await redis_context()
    args = [start, end, "" if count is None else str(count)]
    reply = await _run_script(ctx, SAFE_RANGE_LUA, [key_layout(ctx.config).stream(name)], args)
    if reply is None:
        return None
    return [StreamEntry(id=entry_id, data=entry_fields(fields)) for entry_id, fields in reply]


@timed("latest_read")
async def stream_latest(*, name: str, count: int = 20) -> list[StreamEntry] | None:
    """The newest ``count`` entries, newest first; None when the stream is missing."""
    ctx = await redis_context()
    key = key_layout(ctx.config).stream(name)

    async def read(r):
        async with r.pipeline(transaction=False) as pipe:
            pipe.exists(key)
            pipe.xrevrange(key, "+", "-", count=count)
            return await pipe.execute()

    exists, reply = await ctx.nodes.run(key, read)
    if not exists:
        return None
    return [StreamEntry(id=entry_id, data=entry_fields(fields)) for entry_id, fields in reply]


@timed("exists")
async def streams_exist(*, names: list[str]) -> dict[str, bool]:
    """Whether each name is a stream (TYPE per key, one round trip)."""
    types = await _per_stream(names, lambda pipe, keys: pipe.type(keys.stream))
    return {name: kind == "stream" for name, kind in zip(names, types)}


async def streams_list(
    *, prefix: str = "", limit: int = 100, offset: int = 0, reader: Reader | None = None
) -> RegistryPage:
    """A page of stream names from the registry (never a SCAN); with ``reader``, only the
    streams that reader may read."""
    ctx = await redis_context()
    return await StreamRegistry.of(ctx).page(prefix=prefix, limit=limit, offset=offset, reader=reader)


@timed("stream_last_id")
async def stream_last_id(*, name: str) -> str:
    """The stream's last-generated-id (what ``$`` would mean now), or ``0-0`` when missing."""
    ctx = await redis_context()
    key = key_layout(ctx.config).stream(name)
    return await ctx.nodes.run(key, lambda r: last_generated_id(r, key))


@dataclass(frozen=True)
class ArchiveDeleteOutcome:
    deleted: bool  # the stream is gone (nothing newer than the archive remained)
    removed: int  # entries removed


@timed("archive_delete")
async def stream_delete_archived(
    *, name: str, up_to: str, owner_id: int | None, actor: Actor = SYSTEM
) -> ArchiveDeleteOutcome:
    """Delete what an archive read: the entries up to ``up_to`` (inclusive), in one script,
    only while the actor may still write the stream and its owner is still ``owner_id`` (the
    owner the archive read). Entries published after ``up_to`` stay; when none remain the
    stream is deleted as ``streams_delete`` deletes it (listeners get ``deleted``). Raises
    ``WriteRefused`` (nothing deleted) when the stream changed hands."""
    validate_stream_name(name)
    ctx = await redis_context()
    args = [*_actor_args(name, actor), up_to, "" if owner_id is None else str(owner_id)]
    reply = await _run_script(ctx, ARCHIVE_DELETE_LUA, _write_keys(ctx, name), args)
    if reply[0] == 0:
        raise WriteRefused(name, _refusal_meta(reply[1], reply[2]))
    deleted = bool(reply[1])
    if deleted:
        ctx.streams_changed([name], deleted=True)
        await announce_deleted(ctx, [name])
    else:
        ctx.streams_changed([name])
    return ArchiveDeleteOutcome(deleted=deleted, removed=int(reply[2]))
