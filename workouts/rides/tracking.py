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

Late samples (docs/rides.md): a sample earlier in ride time than the latest (a device's
back-fill sent after newer samples) is not dropped: the tracker reads the stream again up to
its last entry and replays the ride in ride-time order (``_place_samples``, at most once per
``PLACE_EVERY_S``), the archive's order, and every viewer gets the whole chart again
(``chart_reset``).

Markers (``POST /api/streams/{name}/markers``, workouts/rides/markers.py) are entries of the
stream: no sample (``EntryReader`` skips them, so no metric moves), each in the snapshot's
``markers`` as ``{"label", "ride_s"}`` in the order they arrived, which a late joiner's
catch-up reads like everyone else.

FTP: the stream's setting (``PUT /api/streams/{name}`` ``{"ftp": …}``, read through the
shared metadata cache), else the owner's ``AthleteProfile`` (read at most every
``PROFILE_REFRESH_S`` in a short database call; the task holds no connection). CP, W′ and max
heart rate come from the profile (defaults: workouts/physiology.py). They are read before the
catch-up, so the W′ balance and the time in zones of the whole ride use them; a change later
applies from the next seconds on (``LiveRide.set_physiology``), while the archived workout
uses the values of its creation for the whole ride.

The ride's state (docs/rides.md, ``workouts.rides.states.ride_state``) is checked at every tick
of the follow (at least once a second): a change of ``state``, of ``connected`` or of the
archived workout publishes a snapshot even when no entry arrived. ``connected`` is false while
this process cannot reach the stream's Redis: the hub's reader of the stream failed and is
backing off, or the metadata could not be read (``StreamHub.connected``). The end marker
reaches the tracker like any entry, so its end shows before the metadata cache is refreshed.
The archived workout (``workout_id`` in the metadata) is read once from the database, through
the outage clock, holding no connection.
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
from dataclasses import replace
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
from streams.store.names import END_FIELD, MARKER_FIELD
from streams.store.positions import START, id_order
from workouts.alerts import AlertWatch
from workouts.compliance import Compliance
from workouts.metrics import LiveRide, or_none
from workouts.models import AthleteProfile, Workout
from workouts.physiology import Physiology
from workouts.plan_services import RidePlan, ride_plan
from workouts.rides.archive import EntryReader, marker_of, stream_samples
from workouts.rides.states import ended_reason, entry_ms, ride_state
from workouts.samples import CHANNELS

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 1.0
LINGER_S = 60.0
PROFILE_REFRESH_S = 30.0
CHART_S = 300.0  # the chart's span: the last 5 minutes of ride time
PLACE_EVERY_S = 5.0  # late samples place a ride again at most this often (a replay of the ride)
PLACE_SLICE = 1000  # samples replayed between two turns of the event loop (~15-25 ms)


class Profile(NamedTuple):
    ftp: int | None = None
    weight_kg: float | None = None
    max_heart_rate: int | None = None
    critical_power: int | None = None
    w_prime: int | None = None


NO_PROFILE = Profile()
WORKOUT_KEYS = (
    "duration_s", "moving_time_s", "normalized_power", "intensity_factor", "tss", "avg_power", "avg_hr",
    "max_power", "peak_5s", "peak_1min", "peak_5min", "peak_20min",
)


@database_sync_to_async
def _profile_of(owner_id: int) -> Profile:
    row = AthleteProfile.objects.filter(athlete_id=owner_id).values_list(*Profile._fields).first()
    return Profile(*row) if row else NO_PROFILE


_ride_plan = database_sync_to_async(ride_plan)
ALERT_LOG = 100  # the alerts kept for viewers that have not had them yet


@database_sync_to_async
def _workout_of(workout_id: int) -> dict | None:
    """The archived workout's summary for the snapshot (docs/rides.md), None if it is gone."""
    row = Workout.objects.filter(pk=workout_id).values("id", *WORKOUT_KEYS).first()
    return None if row is None else {"id": row["id"], "url": f"/workouts/{row['id']}", **row}


def _last_value(value: float, last: float | None) -> float | None:
    return last if value != value else round(value, 3)


def _rounded(value):
    if isinstance(value, list):
        return [_rounded(v) for v in value]
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
        self._meta_read = True  # the last metadata read reached Redis
        self._profile: Profile = NO_PROFILE
        self._profile_for: tuple[int | None, float] = (None, float("-inf"))
        self.speed: float | None = None  # the last values the stream carried
        self.distance: float | None = None
        self.end_id: str | None = None  # the end marker, once it arrived
        self.end_reason: str | None = None
        self.markers: list[dict] = []  # {"label", "ride_s"}, as the marker entries arrived
        self.plan: RidePlan | None = None  # the stream's plan resolved to watts (docs/rides.md)
        self.compliance: Compliance | None = None
        self._plan_key: tuple | None = None  # (plan id, plan start, FTP) it was resolved for
        self._plan_read_at = float("-inf")
        self.alerts = AlertWatch(hr_pct=settings.ALERT_HR_PCT)
        self.alert_log: list[tuple[int, dict]] = []  # (sequence, alert event), the last ALERT_LOG
        self.alert_seq = 0
        self._workout: tuple[int | None, dict | None] = (None, None)  # the archived workout read
        self._status: tuple | None = None  # (state, ended_reason, connected, workout id) last published
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()  # resolved once the catch-up is done (or the tracker ended)
        self._changed = loop.create_future()
        self._dirty = False
        self._misplaced = False  # a late sample came: place the ride again (``_place_samples``)
        self._placed_at = float("-inf")
        self.chart_epoch = 0  # placings so far: a viewer's chart starts over when it changes
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
        await self._physiology()  # before the catch-up: the whole ride's W′ balance and zones
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
                elif await self._status_now() != self._status:
                    await self._publish()
                if self.viewers == 0 and now - self.idle_since >= LINGER_S:
                    return

    def _add(self, entry_id: str, data_json: str) -> None:
        self.last_id = entry_id
        fields = json.loads(data_json)
        if END_FIELD in fields:
            self.end_id, self.end_reason = entry_id, fields[END_FIELD] or "owner"
        if MARKER_FIELD in fields:
            ride_s, label = marker_of(fields)
            self.markers.append({"label": label, "ride_s": ride_s})
            self._dirty = True
            return
        late = self.reader.late
        sample = self.reader.sample(entry_id, fields)
        if self.reader.late != late:  # earlier than the latest: the ride is placed again
            self._misplaced = self._dirty = True
        if sample is not None:
            self._take(sample)
            self._dirty = True

    def _take(self, sample: dict[str, float], *, quiet: bool = False, chart: RideChart | None = None) -> None:
        """One sample, after every sample before it in ride time, into the engine, the chart
        (``chart``, else the viewers'), the compliance and the alerts (``quiet``: the alerts'
        changes are not logged)."""
        self.ride.push(sample["t"], sample["power"], sample["heart_rate"], sample["cadence"])
        ride_s = sample["t"] - self.ride.first_t
        (chart or self.chart).add(ride_s, sample["power"], sample["heart_rate"])
        if self.compliance is not None:
            self.compliance.push_sample(ride_s - self.plan.start_s, sample["power"])
        self._watch(ride_s, quiet=quiet, heart_rate=or_none(sample["heart_rate"]))
        self.speed = _last_value(sample["speed"], self.speed)
        self.distance = _last_value(sample["distance"], self.distance)

    async def _place_samples(self) -> None:
        """Late samples came (a device's back-fill after a dropout, sent after newer ones): the
        ride again from its entries up to the last one read, in ride-time order, as the archive
        reads them (``StreamSamples.placed``), so the live numbers, the chart and the archive
        agree with an uninterrupted ride of the same samples (docs/rides.md, "Late samples").
        At most once per ``PLACE_EVERY_S``: until then a late sample counts for nothing. Every
        viewer's chart starts over (``chart_epoch``); the alerts that differ after it are
        logged as raised or cleared."""
        if time.monotonic() - self._placed_at < PLACE_EVERY_S:
            return
        self._placed_at = time.monotonic()
        acc = await stream_samples(self.name, end=self.last_id)
        self._misplaced = False
        if acc is None or acc.count == 0:
            return  # deleted meanwhile: the follow says so
        columns = acc.placed()
        raised = dict(self.alerts.raised)
        self.ride = LiveRide(physiology=self.ride.physiology)
        if self.compliance is not None:
            self.compliance = Compliance(self.plan.steps, tolerance_pct=settings.PLAN_TOLERANCE_PCT)
        self.alerts = AlertWatch(hr_pct=settings.ALERT_HR_PCT)
        self.speed = self.distance = None
        # Replayed in slices (other streams' listeners wait at most one slice); viewers read
        # only the snapshot and the chart, and keep the old chart until the new one is whole.
        chart = RideChart()
        for k, row in enumerate(zip(*(columns[name].tolist() for name in CHANNELS))):
            self._take(dict(zip(CHANNELS, row)), quiet=True, chart=chart)
            if k % PLACE_SLICE == PLACE_SLICE - 1:
                await asyncio.sleep(0)
        self.chart = chart
        self.reader.last_t = float(columns["t"][-1])
        self.chart_epoch += 1
        ride_s = self.ride_s()
        self._log_alerts(
            [{"kind": kind, "state": "raised", "ride_s": round(at)} for kind, at in self.alerts.raised.items()
             if kind not in raised]
            + [{"kind": kind, "state": "cleared", "ride_s": round(ride_s)} for kind in raised
               if kind not in self.alerts.raised]
        )

    def ride_s(self) -> float | None:
        """The ride time of the last sample (the plan's clock follows the samples' time)."""
        return None if self.ride.first_t is None else self.ride.last_t - self.ride.first_t

    def _plan_state(self, ride_s: float) -> str | None:
        return None if self.compliance is None else self.compliance.state_at(ride_s - self.plan.start_s)

    def _watch(self, ride_s: float, *, quiet: bool = False, **figures) -> None:
        """Alerts after a sample (or a change of state): logged for the viewers (``alert_log``)
        unless ``quiet``."""
        w_prime = self.ride.w_prime_now
        changes = self.alerts.update(
            ride_s, w_prime_balance=w_prime and w_prime[0], w_prime=w_prime and w_prime[1],
            max_hr=self.ride.physiology.max_heart_rate, plan_state=self._plan_state(ride_s), **figures,
        )
        if not quiet:
            self._log_alerts(changes)

    def _log_alerts(self, changes: list[dict]) -> None:
        for change in changes:
            self.alert_seq += 1
            self.alert_log.append((self.alert_seq, {"stream": self.name, **change}))
            self._dirty = True
        del self.alert_log[:-ALERT_LOG]

    async def _plan_for(self, meta: store.StreamMeta, ftp: int | None) -> None:
        """The stream's plan resolved for ``ftp`` (read again when the plan, its start or the
        FTP changes, and every ``PROFILE_REFRESH_S`` for an edited plan). The compliance
        starts over only when the steps or the start changed."""
        key = (meta.plan, meta.plan_start, ftp)
        if key == self._plan_key and time.monotonic() - self._plan_read_at < PROFILE_REFRESH_S:
            return
        plan = None
        if meta.plan is not None:
            try:
                plan = await database_outage.through(lambda: _ride_plan(meta, ftp=ftp))
            except DatabaseDown:  # the plan as last read, if any
                return
        self._plan_key, self._plan_read_at = key, time.monotonic()
        if plan is None:
            self.plan = self.compliance = None
        elif self.plan is None or (plan.steps, plan.start_s) != (self.plan.steps, self.plan.start_s):
            self.plan = plan
            self.compliance = Compliance(plan.steps, tolerance_pct=settings.PLAN_TOLERANCE_PCT)
        else:
            self.plan = plan

    def _plan_out(self) -> dict | None:
        """The contract's ``"plan"``: the step now and the compliance so far (null: no plan)."""
        if self.compliance is None:
            return None
        ride_s = self.ride_s()
        # Before the first sample the plan has not started (it starts at the first entry, or
        # start_s seconds after it).
        plan_s = -self.plan.start_s - 1e-9 if ride_s is None else ride_s - self.plan.start_s
        return {"id": self.plan.plan_id, "name": self.plan.name, "start_s": self.plan.start_s,
                **self.compliance.snapshot(plan_s)}

    def _info(self, meta: store.StreamMeta) -> store.StreamInfo:
        """The stream as the states read it: this tracker's last entry, and the end marker it
        saw even before the metadata copy has it."""
        if self.end_id is not None and meta.ended_ms is None:
            meta = replace(meta, ended_ms=entry_ms(self.end_id), ended_reason=self.end_reason)
        last = None if self.last_id == START else self.last_id
        return store.StreamInfo(name=self.name, length=0 if last is None else 1, first_id=last, last_id=last, meta=meta)

    def connected(self) -> bool:
        """Whether this process reaches the stream's Redis (its hub reader, its metadata)."""
        return self._meta_read and self.board.hub.connected(self.name)

    async def _status_now(self) -> tuple:
        meta = await self._stream_meta()
        info = self._info(meta)
        return ride_state(info), ended_reason(info), self.connected(), meta.workout_id

    async def _stream_meta(self) -> store.StreamMeta:
        """The stream's owner and FTP (the shared metadata cache); while Redis cannot be reached
        (a failover outlasting the node map's redirect deadline), the last copy read."""
        try:
            self._meta = (await MetaCache.of(await redis_context()).get((self.name,)))[self.name]
            self._meta_read = True
        except (RedisConnectionError, RedisTimeoutError):
            self._meta_read = False
            if self._meta is None:
                raise
        return self._meta

    async def _physiology(self) -> tuple[store.StreamMeta, Profile]:
        """The stream's metadata and its owner's profile; the ride's physiology follows them
        (FTP: the stream's, else the profile's)."""
        meta = await self._stream_meta()
        profile = await self._profile_for_owner(meta.owner_id)
        self.ride.set_physiology(Physiology(
            ftp=meta.ftp or profile.ftp, critical_power=profile.critical_power, w_prime=profile.w_prime,
            max_heart_rate=profile.max_heart_rate,
        ))
        await self._plan_for(meta, meta.ftp or profile.ftp)
        return meta, profile

    async def _publish(self) -> None:
        meta, profile = await self._physiology()
        if self._misplaced:
            await self._place_samples()
        ftp = meta.ftp or profile.ftp
        cp_w = self.ride.physiology.cp_and_w_prime() or (None, None)
        info = self._info(meta)
        workout = await self._archived_workout(meta.workout_id)
        self._status = (ride_state(info), ended_reason(info), self.connected(), self._workout[0])
        if (ride_s := self.ride_s()) is not None:
            stale = self._status[0] == "stale"
            self._watch(ride_s + (settings.RIDE_STALE_AFTER_MS / 1000 if stale else 0), stale=stale)
        snapshot = {
            "name": self.name,
            "last_id": self.last_id,
            **{key: _rounded(value) for key, value in self.ride.snapshot(ftp=ftp).items()},
            "ftp": ftp,
            "ftp_source": "stream" if meta.ftp else ("profile" if profile.ftp else None),
            "weight_kg": profile.weight_kg,
            "max_heart_rate": profile.max_heart_rate,
            "critical_power": cp_w[0],
            "w_prime": cp_w[1],
            "speed": self.speed,
            "distance": self.distance,
            "state": self._status[0],
            "ended_reason": self._status[1],
            "last_entry_ms": entry_ms(info.last_id),
            "connected": self._status[2],
            "workout": workout,
            "markers": list(self.markers),
            "plan": self._plan_out(),
            "alerts": self.alerts.active(),
        }
        self._dirty = self._misplaced  # late samples wait for the next placing: publish again
        self._published_at = time.monotonic()
        self.snapshot = snapshot
        self.version += 1
        if not self.ready.done():
            self.ready.set_result(None)
        self._wake()

    async def _profile_for_owner(self, owner_id: int | None) -> Profile:
        if owner_id is None:
            return NO_PROFILE
        asked_for, at = self._profile_for
        if asked_for != owner_id or time.monotonic() - at >= PROFILE_REFRESH_S:
            try:
                self._profile = await database_outage.through(lambda: _profile_of(owner_id))
            except DatabaseDown:  # the rider goes on being tracked: the last profile read, if any
                return self._profile if asked_for == owner_id else NO_PROFILE
            self._profile_for = (owner_id, time.monotonic())
        return self._profile

    async def _archived_workout(self, workout_id: int | None) -> dict | None:
        """The workout the ride was archived as, read once (again only if the id changes; while
        the database is away, none yet: the next snapshot tries again)."""
        if workout_id is None:
            self._workout = (None, None)
        if workout_id is None or self._workout[0] == workout_id:
            return self._workout[1]
        try:
            self._workout = (workout_id, await database_outage.through(lambda: _workout_of(workout_id)))
        except DatabaseDown:
            return None
        return self._workout[1]

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
        board = cls(StreamHub.of(ctx))  # the hub made first, so closed after the board
        ctx.on_close(board.close)
        return board

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub
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


class Alert(NamedTuple):
    """An alert raised or cleared (``event: alert``): ``{"stream", "kind", "state", "ride_s"}``."""

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


def _status_of(snapshot: dict | None) -> tuple | None:
    """What of a snapshot is news without a new entry (docs/rides.md)."""
    if snapshot is None:
        return None
    workout = snapshot["workout"]
    return snapshot["state"], snapshot["ended_reason"], snapshot["connected"], workout and workout["id"]


async def metrics_updates(
    board: MetricsBoard, follow: Follow, *, heartbeat: float
) -> AsyncIterator[list[Snapshot | Stop]]:
    """What a viewer of ``follow``'s live metrics gets, whatever carries it (SSE, WebSocket):
    a list of updates whenever a stream's snapshot changes (at most once a second), an empty
    list when ``heartbeat`` passed without one. A ``Snapshot``'s id is the stream's last entry
    id (the composite id of ``follow`` for several streams), so a resume gets only newer ones.
    A snapshot also goes out when the ride's status (state, ended reason, connected, workout)
    changed though no entry arrived; a resumed viewer starts from the status of the moment,
    so a resume replays nothing.
    With one stream each snapshot also has ``chart``: the chart points this viewer has not had
    yet, and ``chart_reset``: true when ``chart`` is the whole chart (the last ``CHART_S`` of
    ride time) to draw instead of what the viewer has — a connection's first snapshot, and the
    first after late samples placed the ride again. A ``Stop``: with several streams a
    deleted one leaves and the others go on; anything else (one stream, access revoked,
    shutdown, failure) is the last update."""
    trackers = [board.acquire(name) for name in follow.names]
    sent = {name: -1 for name in follow.names}  # the version sent, per stream
    charted = -1.0  # the ride time of the last chart point sent (one stream only)
    epoch = None  # the tracker's chart_epoch when it was charted
    recheck = settings.ACCESS_RECHECK_INTERVAL_MS / 1000
    try:
        await asyncio.gather(*(asyncio.shield(t.ready) for t in trackers))
        told = {t.name: (_status_of(t.snapshot) if follow.positions[t.name] != START else None) for t in trackers}
        alerted = {t.name: t.alert_seq for t in trackers}  # alerts from now on (the snapshot says which are up)
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
                if tracker.alert_seq != alerted[name]:
                    updates += [Alert(a) for seq, a in tracker.alert_log if seq > alerted[name]]
                    alerted[name] = tracker.alert_seq
                if tracker.snapshot and tracker.version != sent[name]:
                    sent[name] = tracker.version
                    advanced = id_order(tracker.snapshot["last_id"]) > id_order(follow.positions[name])
                    if advanced or _status_of(tracker.snapshot) != told[name]:
                        follow.positions[name] = max(follow.positions[name], tracker.snapshot["last_id"], key=id_order)
                        told[name] = _status_of(tracker.snapshot)
                        data = tracker.snapshot
                        if not follow.multi:
                            reset = epoch != tracker.chart_epoch  # the first, or the ride placed again
                            epoch = tracker.chart_epoch
                            if reset:
                                charted = -1.0
                            chart = tracker.chart.after(charted)
                            charted = chart[-1][0] if chart else charted
                            data = {**data, "chart": chart, "chart_reset": reset}
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
            else f"event: alert\ndata: {json.dumps(u.data)}\n\n" if isinstance(u, Alert)
            else f"event: {u.ended.reason}\ndata: {json.dumps(u.payload(follow.multi))}\n\n"
            for u in updates
        ]
        yield "".join(parts) or ": ping\n\n"
