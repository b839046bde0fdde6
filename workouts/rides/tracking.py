"""Live ride metrics: one engine per followed stream per process, shared by every viewer.

A ``RideTracker`` follows its stream like any listener (catch-up from the first entry, then the
hub: streams/live/follow.py), turns each entry into a sample with the archive's rule
(``workouts.rides.archive.EntryReader``) and feeds ``workouts.metrics.LiveRide``, so the numbers a
coach sees live are the ones the workout archived from the stream gets. It publishes a
snapshot at most once a second while entries arrive. Viewers (``GET …/metrics``, the metrics
SSE, the live pages) take a tracker from this loop's ``MetricsBoard`` and give it back; a
tracker nobody views stays ``LINGER_S`` (a reconnecting viewer reuses it), then its task ends
itself, except after a one-shot ``GET …/metrics``: a tracker only it viewed ends before the
answer, so the stream holds no followed-stream slot afterwards (a poller pays a catch-up from
the stream's first entry per call; the metrics SSE is the way to watch). The
board owns every tracker task and cancels them at shutdown (``RedisContext.close``).

Chart: each tracker also keeps the last ``CHART_S`` of ride time as at most one point per
second, ``[ride_s, power, heart_rate]`` (ride time: seconds since the ride's first sample, by
the same rule as the metrics). The one-stream metrics SSE sends a connection the whole chart
in its first event and only newer points after, so a page draws ride time as the device
recorded it (an upload of buffered samples is not squeezed into the moment it arrived) and
needs no other request.

FTP: the stream's setting (``PUT /api/streams/{name}`` ``{"ftp": …}``, read through the
shared metadata cache), else the owner's ``AthleteProfile`` (read at most every
``PROFILE_REFRESH_S`` in a short database call; the task holds no connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator
from typing import NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.core.aio import cancel_and_wait, raise_if_cancelled
from streams.core.database import DatabaseDown, database_outage
from streams.engine.context import redis_context
from streams.live.follow import Ended, Follow, MetaCache, live_batches
from streams.live.hub import StreamHub
from streams.store import services as store
from streams.store.positions import START, id_order
from workouts.metrics import LiveRide, or_none
from workouts.models import AthleteProfile
from workouts.rides.archive import EntryReader

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 1.0
LINGER_S = 60.0
PROFILE_REFRESH_S = 30.0
CHART_S = 300.0  # the chart's span: the last 5 minutes of ride time


@database_sync_to_async
def _profile_of(owner_id: int) -> tuple[int | None, float | None]:
    row = AthleteProfile.objects.filter(athlete_id=owner_id).values_list("ftp", "weight_kg").first()
    return row or (None, None)


def _rounded(value):
    return round(value, 3) if isinstance(value, float) else value


class RideChart:
    """The chart of a ride: the first sample of each second of ride time, the last ``CHART_S``,
    as ``(ride_s, power, heart_rate)`` in three float arrays (NaN for missing): 24 bytes a
    point, about 8 KB a stream at 300 points (tracemalloc; a deque of tuples took ~40 KB)."""

    def __init__(self) -> None:
        self.t, self.power, self.heart_rate = array("d"), array("d"), array("d")

    def add(self, ride_s: float, power: float, heart_rate: float) -> None:
        if self.t and math.floor(ride_s) <= math.floor(self.t[-1]):
            return
        self.t.append(round(ride_s, 3))
        self.power.append(round(power, 1))
        self.heart_rate.append(round(heart_rate, 1))
        stale = bisect_left(self.t, ride_s - CHART_S)
        if stale:
            for column in (self.t, self.power, self.heart_rate):
                del column[:stale]

    def after(self, ride_s: float) -> list[list]:
        """The points after ``ride_s`` (every point for a negative one), oldest first."""
        return [
            [self.t[k], or_none(self.power[k]), or_none(self.heart_rate[k])]
            for k in range(bisect_right(self.t, ride_s), len(self.t))
        ]


class RideTracker:
    """One stream's live metrics in this process."""

    def __init__(self, board: "MetricsBoard", name: str) -> None:
        self.board = board
        self.name = name
        self.ride = LiveRide()
        self.reader = EntryReader()
        self.last_id = START
        self.chart = RideChart()
        self.snapshot: dict | None = None
        self.version = 0
        self.ended: Ended | None = None
        self.finished = False  # the task has ended or is ending: the board makes a new one
        self.viewers = 0
        self.idle_since = time.monotonic()
        self._meta: store.StreamMeta | None = None  # the last copy read
        self._profile: tuple[int | None, float | None] = (None, None)
        self._profile_for: tuple[int | None, float] = (None, float("-inf"))
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()  # resolved once the catch-up is done (or the tracker ended)
        self._changed = loop.create_future()
        self._dirty = False
        self._published_at = float("-inf")
        self.task = loop.create_task(self._run(), name=f"ride-metrics:{name}")

    def changed(self) -> asyncio.Future:
        """Resolved at the next snapshot or end."""
        return self._changed

    async def _run(self) -> None:
        try:
            await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live metrics of stream %r failed", self.name)
            self._end(Ended("failed", "the live metrics of this stream failed; reconnect"))
        finally:
            self.finished = True
            self.board._forget(self)
            if not self.ready.done():
                self.ready.set_result(None)
            if self.ended is None:
                self._end(Ended("shutdown", "the server is stopping"))

    async def _follow(self) -> None:
        target = id_order(await store.stream_last_id(name=self.name))
        follow = Follow(names=(self.name,), positions={self.name: START}, multi=False)
        if target <= 0:
            await self._publish()
        while True:
            async for item in live_batches(follow, heartbeat=PUBLISH_EVERY_S):
                raise_if_cancelled()
                if isinstance(item, Ended):
                    if item.reason == "overflow":
                        break  # behind the hub's queue: follow again from the last entry read
                    self._end(item)
                    return
                for entry in item:
                    self._add(entry.id, entry.data_json)
                    follow.positions[self.name] = entry.id
                now = time.monotonic()
                if not self.ready.done():
                    if id_order(self.last_id) >= target:
                        await self._publish()
                elif self._dirty and now - self._published_at >= PUBLISH_EVERY_S:
                    await self._publish()
                if self.viewers == 0 and now - self.idle_since >= LINGER_S:
                    return

    def _add(self, entry_id: str, data_json: str) -> None:
        self.last_id = entry_id
        sample = self.reader.sample(entry_id, json.loads(data_json))
        if sample is not None:
            self.ride.push(sample["t"], sample["power"], sample["heart_rate"], sample["cadence"])
            self.chart.add(sample["t"] - self.ride.first_t, sample["power"], sample["heart_rate"])
            self._dirty = True

    async def _stream_meta(self) -> store.StreamMeta:
        """The stream's owner and FTP (the shared metadata cache); while Redis cannot be reached
        (a failover outlasting the node map's redirect deadline), the last copy read."""
        try:
            self._meta = (await MetaCache.of(await redis_context()).get((self.name,)))[self.name]
        except (RedisConnectionError, RedisTimeoutError):
            if self._meta is None:
                raise
        return self._meta

    async def _publish(self) -> None:
        meta = await self._stream_meta()
        profile_ftp, weight = await self._profile_for_owner(meta.owner_id)
        ftp = meta.ftp or profile_ftp
        snapshot = {
            "name": self.name,
            "last_id": self.last_id,
            **{key: _rounded(value) for key, value in self.ride.snapshot(ftp=ftp).items()},
            "ftp": ftp,
            "ftp_source": "stream" if meta.ftp else ("profile" if profile_ftp else None),
            "weight_kg": weight,
        }
        self._dirty = False
        self._published_at = time.monotonic()
        self.snapshot = snapshot
        self.version += 1
        if not self.ready.done():
            self.ready.set_result(None)
        self._wake()

    async def _profile_for_owner(self, owner_id: int | None) -> tuple[int | None, float | None]:
        if owner_id is None:
            return None, None
        asked_for, at = self._profile_for
        if asked_for != owner_id or time.monotonic() - at >= PROFILE_REFRESH_S:
            try:
                self._profile = await database_outage.through(lambda: _profile_of(owner_id))
            except DatabaseDown:  # the rider goes on being tracked: the last profile read, if any
                return self._profile if asked_for == owner_id else (None, None)
            self._profile_for = (owner_id, time.monotonic())
        return self._profile

    def _end(self, ended: Ended) -> None:
        self.ended = ended
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)


class MetricsBoard:
    """This event loop's trackers, by stream name."""

    EMPTY = {"streams": 0, "viewers": 0}  # the stats of a context with no board

    @classmethod
    def of(cls, ctx) -> "MetricsBoard":
        """``ctx``'s board; it closes before the hub its trackers follow."""
        return ctx.part(cls, lambda: cls._made_for(ctx))

    @classmethod
    def _made_for(cls, ctx) -> "MetricsBoard":
        StreamHub.of(ctx)  # made first, so closed after the board
        board = cls()
        ctx.on_close(board.close)
        return board

    def __init__(self) -> None:
        self._trackers: dict[str, RideTracker] = {}

    def acquire(self, name: str) -> RideTracker:
        tracker = self._trackers.get(name)
        if tracker is None or tracker.finished:
            tracker = self._trackers[name] = RideTracker(self, name)
        tracker.viewers += 1
        return tracker

    def release(self, tracker: RideTracker) -> None:
        tracker.viewers -= 1
        if tracker.viewers == 0:
            tracker.idle_since = time.monotonic()

    async def retire_if_idle(self, tracker: RideTracker) -> None:
        """End ``tracker`` now if nobody views it (its stream is then no longer followed for
        it); a viewer arriving meanwhile gets a new tracker."""
        if tracker.viewers or tracker.finished:
            return
        tracker.finished = True  # before any await: acquire() makes a new one from here on
        self._forget(tracker)
        await cancel_and_wait(tracker.task)

    def _forget(self, tracker: RideTracker) -> None:
        if self._trackers.get(tracker.name) is tracker:
            del self._trackers[tracker.name]

    def stats(self) -> dict:
        trackers = list(self._trackers.values())
        return {"streams": len(trackers), "viewers": sum(t.viewers for t in trackers)}

    async def close(self) -> None:
        for tracker in list(self._trackers.values()):
            await cancel_and_wait(tracker.task)
        self._trackers.clear()


# --- viewers ---------------------------------------------------------------------------------
async def current_metrics(board: MetricsBoard, name: str, *, linger: bool = True) -> dict:
    """The stream's metrics now (after the catch-up); raises LookupError if it ended. With
    ``linger`` False (a one-shot read) a tracker nobody else views ends before this returns,
    so the stream stays followed for no one."""
    tracker = board.acquire(name)
    try:
        await asyncio.shield(tracker.ready)
        if tracker.snapshot is None:
            raise LookupError(tracker.ended.detail if tracker.ended else f"stream {name!r} not found")
        return tracker.snapshot
    finally:
        board.release(tracker)
        if not linger:
            await board.retire_if_idle(tracker)


class Snapshot(NamedTuple):
    """A stream's metrics for one viewer: ``id`` resumes after it (Last-Event-ID)."""

    id: str
    data: dict


class Stop(NamedTuple):
    """A stream ended for this viewer (``ended.reason``: deleted, shutdown, failed), or the
    whole connection (``name`` None: access revoked)."""

    name: str | None
    ended: Ended

    def payload(self, multi: bool) -> dict:
        if self.ended.reason == "deleted":
            return {"stream": self.name, "detail": f"stream {self.name!r} was deleted"}
        if multi and self.name is not None:
            return {"stream": self.name, "detail": self.ended.detail}
        return {"detail": self.ended.detail}


async def metrics_updates(
    board: MetricsBoard, follow: Follow, *, heartbeat: float
) -> AsyncIterator[list[Snapshot | Stop]]:
    """What a viewer of ``follow``'s live metrics gets, whatever carries it (SSE, WebSocket):
    a list of updates whenever a stream's snapshot changes (at most once a second), an empty
    list when ``heartbeat`` passed without one. A ``Snapshot``'s id is the stream's last entry
    id (the composite id of ``follow`` for several streams), so a resume gets only newer ones.
    With one stream each snapshot also has ``chart``: the chart points this viewer has not had
    yet (the first one: the last ``CHART_S`` of ride time). A ``Stop``: with several streams a
    deleted one leaves and the others go on; anything else (one stream, access revoked,
    shutdown, failure) is the last update."""
    trackers = [board.acquire(name) for name in follow.names]
    sent = {name: -1 for name in follow.names}  # the version sent, per stream
    charted = -1.0  # the ride time of the last chart point sent (one stream only)
    recheck = settings.ACCESS_RECHECK_INTERVAL_MS / 1000
    try:
        await asyncio.gather(*(asyncio.shield(t.ready) for t in trackers))
        now = time.monotonic()
        next_beat, next_check = now + heartbeat, now + recheck
        live = list(trackers)
        while live:
            # Taken before looking: a snapshot made while this body is suspended (at a yield,
            # the access re-check) resolves one of these, so the wait below returns at once.
            changes = [t.changed() for t in live]
            updates: list[Snapshot | Stop] = []
            for tracker in list(live):
                name = tracker.name
                if tracker.snapshot and tracker.version != sent[name] and tracker.snapshot["samples"]:
                    sent[name] = tracker.version
                    if id_order(tracker.snapshot["last_id"]) > id_order(follow.positions[name]):
                        follow.positions[name] = tracker.snapshot["last_id"]
                        data = tracker.snapshot
                        if not follow.multi:
                            chart = tracker.chart.after(charted)
                            charted = chart[-1][0] if chart else charted
                            data = {**data, "chart": chart}
                        updates.append(Snapshot(follow.resume_id(), data))
                if tracker.ended is not None:
                    updates.append(Stop(name, tracker.ended))
                    if tracker.ended.reason != "deleted" or not follow.multi:
                        yield updates
                        return
                    live.remove(tracker)
            now = time.monotonic()
            if updates or now >= next_beat:
                yield updates
                next_beat = now + heartbeat
            if follow.guard is not None and now >= next_check:
                if (ended := await follow.guard(tuple(t.name for t in live))) is not None:
                    yield [Stop(None, ended)]
                    return
                next_check = time.monotonic() + recheck
            if live:
                timeout = max(0.0, min(next_beat, next_check) - time.monotonic())
                await asyncio.wait(changes, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                raise_if_cancelled()
    finally:
        for tracker in trackers:
            board.release(tracker)


async def metrics_events(board: MetricsBoard, follow: Follow, *, heartbeat: float) -> AsyncIterator[str]:
    """The metrics SSE body: ``event: metrics`` with the snapshot's ``id``; ``event: deleted``
    / ``forbidden`` / ``shutdown`` / ``failed`` (``metrics_updates``); ``: ping`` between."""
    yield f"retry: {settings.SSE_RETRY_MS}\n\n"
    async for updates in metrics_updates(board, follow, heartbeat=heartbeat):
        parts = [
            f"event: metrics\nid: {u.id}\ndata: {json.dumps(u.data)}\n\n" if isinstance(u, Snapshot)
            else f"event: {u.ended.reason}\ndata: {json.dumps(u.payload(follow.multi))}\n\n"
            for u in updates
        ]
        yield "".join(parts) or ": ping\n\n"
