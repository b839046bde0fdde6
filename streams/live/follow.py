"""Following streams live: where a listener starts, and the gapless catch-up + hub loop
shared by SSE and WebSocket.

A listener subscribes to the hub *before* reading its catch-up (XRANGE from its position),
so every entry newer than the hub's join point is queued while the catch-up covers everything
up to at least that point; entries at or before what the listener already delivered are
dropped. Result: no gap and no duplicate at the catch-up/live boundary.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import RedisError

from streams.access import identity, rules
from streams.core.aio import OwnedTasks, raise_if_cancelled, settle
from streams.core.errors import InvalidInput
from streams.engine.context import redis_context
from streams.engine.nodes import is_transient
from streams.live.conflation import Conflator
from streams.live.deletions import DeletionFeed
from streams.live.hub import Entry, Rewound, StreamHub, make_entry
from streams.store import services as store
from streams.store.names import validate_resume_id, validate_stream_name
from streams.store.positions import START, id_order

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 500


@dataclass
class Follow:
    """What one listener follows and where each stream stands (the last id delivered)."""

    names: tuple[str, ...]
    positions: dict[str, str]
    multi: bool
    # Asked every ACCESS_RECHECK_INTERVAL while the feed lives: an Ended ends it (forbidden,
    # unavailable), None lets it go on.
    guard: Callable[..., Awaitable["Ended | None"]] | None = None
    # While subscribed: leaves the hub at once (for a response that ends without finishing
    # its generator, e.g. a send that failed). Idempotent; call it on the event loop.
    leave: Callable[[], None] | None = None
    resumed: bool = False  # the positions came from the client (a resume id)
    rate: float | None = None  # ?rate=: at most this many events per second per stream (conflation.py)

    def composite_id(self) -> str:
        """One position per stream, in the order of ``names``, then ``~`` and a fingerprint
        of that list, so a resume with another list (or another order) is refused."""
        return ",".join(self.positions[n] for n in self.names) + "~" + streams_fingerprint(self.names)

    def resume_id(self) -> str:
        return self.composite_id() if self.multi else self.positions[self.names[0]]


def streams_fingerprint(names: tuple[str, ...]) -> str:
    return f"{zlib.crc32(','.join(names).encode()):08x}"


@dataclass(frozen=True)
class Reset:
    """A resume that cannot continue where the client stood: the entries after ``requested``
    are gone (``trimmed``: older than the oldest entry Redis keeps, MAXLEN/XTRIM), or the
    stream's ids went back below it (``rewound``: a failover to a primary whose clock is
    behind wrote lower ids). The follow goes on from ``first_id``, the oldest entry there is
    (None: the stream is empty now); the stream's position becomes ``0-0``."""

    name: str
    requested: str
    first_id: str | None
    reason: str  # "trimmed" | "rewound"

    @property
    def detail(self) -> str:
        if self.reason == "trimmed":
            return (f"entries after {self.requested} in stream {self.name!r} are no longer kept: "
                    f"the follow goes on from the oldest entry there is")
        return (f"stream {self.name!r} now ends before {self.requested} (its ids went back, e.g. a failover): "
                f"the follow goes on from its first entry")


@dataclass(frozen=True)
class Ended:
    """Why a live feed stopped: overflow, deleted (detail = the stream), shutdown, forbidden
    (the caller's access was revoked) or unavailable (the database could not confirm the
    caller for longer than AUTH_OUTAGE_GRACE)."""

    reason: str
    detail: str


def start_mode(value: str | None) -> str:
    if value not in (None, "", "start", "now"):
        raise InvalidInput(f"invalid from={value!r}: use from=start, or omit it for new entries only")
    return value or "now"


async def follow_one(name: str, *, resume: str | None, mode: str | None) -> Follow:
    """Where a single-stream listener starts. A resume id wins over ``from`` (reconnects)."""
    validate_stream_name(name)
    mode = start_mode(mode)
    if resume:
        position = validate_resume_id(resume.strip(), which="Last-Event-ID")
    elif mode == "start":
        position = START
    else:
        position = await store.stream_last_id(name=name)
    return Follow(names=(name,), positions={name: position}, multi=False, resumed=bool(resume))


async def follow_many(streams: str, *, resume: str | None, mode: str | None) -> Follow:
    names = tuple(n.strip() for n in (streams or "").split(",") if n.strip())
    if not names:
        raise InvalidInput("streams is required: a comma-separated list of stream names")
    limit = settings.SSE_MAX_STREAMS
    if len(names) > limit:
        raise InvalidInput(f"{len(names)} streams is more than the limit of {limit} per connection")
    if len(set(names)) != len(names):
        raise InvalidInput("streams lists a name twice")
    for name in names:
        validate_stream_name(name)
    mode = start_mode(mode)
    if resume:
        positions_part, _, fingerprint = resume.partition("~")
        if fingerprint and fingerprint.strip() != streams_fingerprint(names):
            raise InvalidInput(
                "Last-Event-ID belongs to another list of streams: resume with the same streams in the same order"
            )
        ids = [part.strip() for part in positions_part.split(",")]
        if len(ids) != len(names):
            raise InvalidInput(
                f"Last-Event-ID has {len(ids)} positions for {len(names)} streams: "
                "it must be the composite id this endpoint sent, for the same streams in the same order"
            )
        positions = {n: validate_resume_id(i, which="Last-Event-ID position") for n, i in zip(names, ids)}
    elif mode == "start":
        positions = dict.fromkeys(names, START)
    else:
        positions = {n: await store.stream_last_id(name=n) for n in names}
    return Follow(names=names, positions=positions, multi=True, resumed=bool(resume))


def live_hub(ctx) -> StreamHub:
    """``ctx``'s hub, with its cross-process deletion feed running."""
    DeletionFeed.of(ctx).start()
    return StreamHub.of(ctx)


class MetaCache:
    """Stream metadata (owner, visibility, FTP) for access re-checks and live metrics, one per
    event loop (``MetaCache.of(ctx)``), shared by every listener.

    - ``get`` answers from the copies it holds at once: a listener never waits for a refresh.
      Only a stream it holds no copy of is read then (alone, and shared by concurrent askers).
    - Its refresher re-reads exactly the streams the hub follows, once per
      ACCESS_RECHECK_INTERVAL: one HMGET per followed stream per interval, whatever the number
      of listeners. Each node is read under its own ACCESS_RECHECK_TIMEOUT: a node that cannot
      answer (a primary that died, before its replica takes over) keeps its streams' last
      copies and delays no other node's streams. (While it cannot answer, no new entry of its
      streams can be read either.)
    - A write through this process drops its streams' copies (``forget``): read again at once,
      and a read in flight meanwhile does not bring the old copy back.
    """

    MAX_ENTRIES = 100_000

    @classmethod
    def of(cls, ctx) -> "MetaCache":
        return ctx.part(cls, lambda: cls._made_for(ctx))

    @classmethod
    def _made_for(cls, ctx) -> "MetaCache":
        def followed() -> list[str]:
            hub = ctx.peek(StreamHub)
            return hub.followed_names() if hub is not None else []

        cache = cls(followed)
        ctx.on_streams_changed(lambda names, deleted: cache.forget(names))
        ctx.on_close(cache.close)
        return cache

    def __init__(self, followed: Callable[[], list[str]]) -> None:
        self._followed = followed
        self._entries: dict[str, store.StreamMeta] = {}
        self._reading: dict[str, asyncio.Future] = {}  # name -> its first read, in flight
        self._in_flight: list[set[str]] = []  # per read in flight: names forgotten meanwhile
        self._refresher = OwnedTasks()
        self._closed = False
        self.refreshes = 0  # completed refresher rounds (for tests and stats)

    async def get(self, names: tuple[str, ...]) -> dict[str, store.StreamMeta]:
        """Each stream's copy. RedisConnectionError / RedisTimeoutError when a stream with no
        copy yet cannot be read."""
        self._start()
        while missing := [n for n in names if n not in self._entries]:
            await self._read_missing(missing)
        return {n: self._entries[n] for n in names}

    def forget(self, names: list[str]) -> None:
        for name in names:
            self._entries.pop(name, None)
        for forgotten in self._in_flight:
            forgotten.update(names)

    async def close(self) -> None:
        self._closed = True
        await self._refresher.cancel()

    # --- reading ---------------------------------------------------------------------------
    def _start(self) -> None:
        if not self._closed and not len(self._refresher):
            self._refresher.start(self._refresh_forever(), name="stream metadata refresher")

    async def _read_missing(self, names: list[str]) -> None:
        """Read ``names`` (those another caller is not already reading), then wait for all. (A
        name forgotten meanwhile is still missing: ``get`` asks again.)"""
        mine = [n for n in names if n not in self._reading]
        if mine:
            future = asyncio.get_running_loop().create_future()
            for name in mine:
                self._reading[name] = future
            try:
                await settle(future, self._read(mine, keep_old=False))
            finally:
                for name in mine:
                    if self._reading.get(name) is future:
                        del self._reading[name]
        for name in names:
            while name not in self._entries and name in self._reading:
                await asyncio.shield(self._reading[name])

    async def _read(self, names: list[str], *, keep_old: bool) -> None:
        """Read ``names`` and keep what came back. An unreadable stream keeps its old copy
        (``keep_old``) or raises its node's error."""
        timeout = settings.ACCESS_RECHECK_TIMEOUT_MS / 1000
        forgotten: set[str] = set()
        self._in_flight.append(forgotten)
        try:
            read = await store.stream_meta_each(names=names, timeout=timeout)
        finally:
            self._in_flight.remove(forgotten)
        error = None
        for name, meta in read.items():
            if name in forgotten:  # written meanwhile: this copy may be older than the write
                continue
            if isinstance(meta, BaseException):
                error = error or meta
            else:
                self._entries[name] = meta
        if error is not None and not keep_old:
            raise error
        if error is not None:
            _postponed(tuple(n for n, m in read.items() if isinstance(m, BaseException)), error)

    async def _refresh_forever(self) -> None:
        interval = settings.ACCESS_RECHECK_INTERVAL_MS / 1000
        while True:
            started = time.monotonic()
            try:
                await self._refresh()
            except Exception:
                log.exception("stream metadata refresh failed; the last copies stay in use")
            self.refreshes += 1
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    async def _refresh(self) -> None:
        followed = self._followed()[: self.MAX_ENTRIES]
        if followed:
            await self._read(followed, keep_old=True)
        # The streams nobody follows any more drop out (a one-shot reader reads its own again).
        keep = set(followed)
        for name in [n for n in self._entries if n not in keep]:
            del self._entries[name]


POSTPONED_LOG_EVERY_S = 10.0
_postponed_log = {"at": float("-inf"), "since": 0}  # one warning per interval, not per listener


def _postponed(names: tuple[str, ...], exc: Exception) -> None:
    _postponed_log["since"] += 1
    now = time.monotonic()
    if now - _postponed_log["at"] >= POSTPONED_LOG_EVERY_S:
        log.warning(
            "access re-checks postponed (%d since the last warning; the latest of %s): redis unavailable (%s)",
            _postponed_log["since"], ", ".join(names), exc,
        )
        _postponed_log.update(at=now, since=0)


REVOKED = Ended("forbidden", "access to this stream was revoked")
UNAVAILABLE = Ended("unavailable", "the database cannot be reached to re-check access: reconnect later")


def guard_verdict(current: identity.Identity | None, metas: dict[str, store.StreamMeta] | None, *,
                  confirmed: bool = True) -> Ended | None:
    """What one access re-check decides. ``confirmed``: False when the caller's identity could
    not be confirmed (the database down past AUTH_OUTAGE_GRACE): unavailable. ``current``:
    None when the token, user or session no longer works: forbidden, as is a stream it may not
    read. ``metas`` None: Redis could not be read, the next re-check decides. None: go on."""
    if not confirmed:
        return UNAVAILABLE
    if current is None or "read" not in current.scopes:
        return REVOKED
    if metas is not None and not all(rules.may_read(current, m) for m in metas.values()):
        return REVOKED
    return None


def access_guard(ident: identity.Identity, names: tuple[str, ...]) -> Callable[..., Awaitable[Ended | None]]:
    """Whether the caller may still read every stream it follows: its token, user and shares
    (cached, AUTH_CACHE_TTL; while the database is down, the last confirmation within
    AUTH_OUTAGE_GRACE) and each stream's visibility (MetaCache).

    When Redis cannot be reached (an unplanned failover takes longer than the node map's
    redirect deadline), the visibility cannot be read: the follow goes on and the next
    re-check decides. A stream's metadata lives in its own slot, so while it cannot be read no
    new entry of that stream can be either."""

    async def verdict(only: tuple[str, ...] | None = None) -> Ended | None:
        """``only``: the streams still followed, when some of ``names`` have ended."""
        try:
            current = await identity.still_valid(ident)
        except identity.IdentityUnavailable:
            return guard_verdict(None, None, confirmed=False)
        if current is None:
            return guard_verdict(None, None)
        return guard_verdict(current, await _metas_or_none(names if only is None else only))

    return verdict


async def _metas_or_none(names: tuple[str, ...]) -> dict[str, store.StreamMeta] | None:
    """The streams' metadata (MetaCache), or None when Redis cannot be reached (postponed)."""
    try:
        return await MetaCache.of(await redis_context()).get(names)
    except RedisError as exc:
        if not is_transient(exc):
            raise
        _postponed(names, exc)  # unreachable, or a cluster moving the slot (MOVED, CLUSTERDOWN)
        return None


async def _catch_up(name: str, after: str) -> AsyncIterator[list[Entry]]:
    while True:
        chunk = await store.stream_range(name=name, start="(" + after, end="+", count=CATCH_UP_CHUNK)
        if not chunk:
            return
        yield [make_entry(name, e.id, e.data) for e in chunk]
        if len(chunk) < CATCH_UP_CHUNK:
            return
        after = chunk[-1].id


async def _resume_check(follow: Follow) -> tuple[str | None, list[Reset]]:
    """Whether a resume can go on where the client stands, stream by stream (one XINFO
    STREAM each, one round trip; asked after subscribing):

    - a stream that is not there although the client holds a position in it was deleted, or
      Redis lost it (restarted without persistence): nothing will ever follow that position,
      the follow ends as ``deleted`` (the first such name is returned);
    - a position older than the oldest entry kept, in a stream that lost entries (trimmed),
      or newer than the stream's last generated id (its ids went back): a ``Reset``, never a
      silent hole."""
    held = [name for name in follow.names if follow.positions[name] != START] if follow.resumed else []
    if not held:
        return None, []
    bounds = await store.stream_bounds(names=held)
    if gone := next((name for name in held if bounds[name] is None), None):
        return gone, []
    return None, [reset for name in held if (reset := _reset_of(name, follow.positions[name], bounds[name]))]


def _reset_of(name: str, requested: str, bounds: store.StreamBounds) -> Reset | None:
    position = id_order(requested)
    if position > id_order(bounds.last_generated_id):
        return Reset(name, requested, bounds.first_id, "rewound")
    older = bounds.first_id is not None and position < id_order(bounds.first_id)
    if older and bounds.removed is not False:  # Redis < 7 cannot say whether any was removed
        return Reset(name, requested, bounds.first_id, "trimmed")
    return None


def _newer(batch: list[Entry], cursors: dict[str, int]) -> list[Entry]:
    """Entries newer than what was already passed on. (``Follow.positions`` is advanced by
    the consumer as it sends each entry: a composite id must show each event's own position.)"""
    fresh = []
    for entry in batch:
        if entry.pos > cursors[entry.name]:
            cursors[entry.name] = entry.pos
            fresh.append(entry)
    return fresh


def _conflated(fresh: list[Entry], conflator: Conflator | None, now: float) -> list[Entry]:
    return fresh if conflator is None else conflator.admit(fresh, now)


async def _through_rewinds(follow: Follow, batch: list, cursors: dict[str, int],
                           conflator: Conflator | None) -> AsyncIterator[list[Entry] | Reset]:
    """A batch with ``Rewound`` marks (the hub found a stream's ids went back, hub.py): the
    entries queued before a mark, then a ``Reset`` (``rewound``) naming where the client stood,
    then the stream again from its first entry — as for a resume past the stream's end. Entries
    queued after the mark that the catch-up already gave are dropped by ``_newer``."""
    segment: list[Entry] = []
    for item in batch:
        if not isinstance(item, Rewound):
            segment.append(item)
            continue
        if fresh := _conflated(_newer(segment, cursors), conflator, time.monotonic()):
            yield fresh
        segment = []
        if item.name not in cursors:
            continue
        bounds = (await store.stream_bounds(names=[item.name]))[item.name]
        reset = Reset(item.name, follow.positions[item.name], bounds.first_id if bounds else None, "rewound")
        follow.positions[item.name] = START
        cursors[item.name] = id_order(START)
        yield reset
        if conflator is not None:
            conflator.drop(item.name)
        async for chunk in _catch_up(item.name, START):
            if fresh := _conflated(_newer(chunk, cursors), conflator, time.monotonic()):
                yield fresh
    if fresh := _conflated(_newer(segment, cursors), conflator, time.monotonic()):
        yield fresh


async def live_batches(follow: Follow, *, heartbeat: float) -> AsyncIterator[list[Entry] | Reset | Ended]:
    """A ``Reset`` per stream a resume cannot continue in, then catch-up then live batches of
    new entries (with ``follow.rate``: conflated, conflation.py); ``[]`` when ``heartbeat`` s
    pass quietly; finally an ``Ended`` if the hub ends the feed or the follow's guard says no.
    Unsubscribes on any exit."""
    hub = live_hub(await redis_context())
    cursors = {n: id_order(p) for n, p in follow.positions.items()}
    recheck = settings.ACCESS_RECHECK_INTERVAL_MS / 1000
    conflator = Conflator(follow.rate) if follow.rate else None
    sub = await hub.subscribe(follow.names)
    follow.leave = lambda: hub.unsubscribe(sub)
    try:
        gone, resets = await _resume_check(follow)
        if gone:
            yield Ended("deleted", gone)
            return
        for reset in resets:
            follow.positions[reset.name] = START
            cursors[reset.name] = id_order(START)
            yield reset
        for name in follow.names:
            async for batch in _catch_up(name, follow.positions[name]):
                raise_if_cancelled()
                if fresh := _conflated(_newer(batch, cursors), conflator, time.monotonic()):
                    yield fresh
        now = time.monotonic()
        # Spread the re-checks of listeners that connected together over the interval.
        next_beat, next_check = now + heartbeat, now + recheck * (0.5 + random.random() / 2)
        while True:
            raise_if_cancelled()
            # A bare future (no wait_for): a cancellation here is never swallowed.
            waiter = sub.waiter(min(next_beat, next_check if follow.guard else next_beat))
            if waiter is not None:
                # A conflated entry held back wakes its listener when its interval closes.
                timer = conflator.timer(waiter) if conflator is not None else None
                try:
                    await waiter
                finally:
                    if timer is not None:
                        timer.cancel()
            batch = sub.take()
            now = time.monotonic()
            if sub.marked:  # a stream's ids went back: its listeners are reset (rare)
                sub.marked = False
                async for item in _through_rewinds(follow, batch, cursors, conflator):
                    yield item
                next_beat = time.monotonic() + heartbeat
            elif (fresh := _conflated(_newer(batch, cursors), conflator, now)) or (
                    not batch and sub.end_reason is None and now >= next_beat):
                yield fresh  # [] = a quiet heartbeat interval
                next_beat = now + heartbeat
            # Hold no batch while waiting: objects kept across the wait are what every garbage
            # collection examines, once per listener.
            batch = fresh = None
            if sub.end_reason is not None:
                if conflator is not None and (held := conflator.release(now, everything=True)):
                    yield held  # the newest entries held back: sent before the end
                yield Ended(sub.end_reason, sub.end_detail)
                return
            # After delivering, not before: a re-check never holds up entries already here.
            if follow.guard is not None and time.monotonic() >= next_check:
                if (ended := await follow.guard()) is not None:
                    yield ended
                    return
                next_check = time.monotonic() + recheck
    finally:
        follow.leave = None
        hub.unsubscribe(sub)
