"""A finished stream becomes a workout: the stream's entries read in chunks into columnar
samples (``stream_samples``) and archived with the same metrics as posting the same samples
(``workout_from_stream``). ``EntryReader`` is the one rule that turns a stream entry into a
sample, for the archive and for the live ride metrics (workouts/rides/tracking.py) alike."""

from __future__ import annotations

import datetime as dt
from array import array
from dataclasses import dataclass

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings

from streams.access.identity import SYSTEM, Actor
from streams.core import offload
from streams.store import services as store
from streams.store.names import MARKER_FIELD, RIDE_S_FIELD, is_service_entry
from workouts.compliance import plan_compliance
from workouts.models import Workout
from workouts.plan_services import ride_plan
from workouts.prepare import prepare_samples
from workouts.rides.states import ride_state
from workouts.samples import CHANNELS, Samples, SamplesError, samples_from_arrays
from workouts.services import profile_ftp, profile_physiology, workout_create_prepared

STREAM_FIELD_ALIASES = {"hr": "heart_rate", "heartrate": "heart_rate", "cad": "cadence", "watts": "power"}
ARCHIVE_CHUNK = 5000


class EntryReader:
    """Stream entries → samples, the one rule for archives and live metrics: field aliases
    (``hr``, ``cad``, ``watts``), ``t`` from the ``t`` field or else from the entry id's
    millisecond timestamp (seconds since the first entry), a value that is not a finite number
    is missing; a ride's end marker and its markers are no samples (and change nothing: not
    even the first entry's time).

    Ride time decides the order, not arrival (docs/rides.md, "Late samples"): an entry at the
    time of one before it is a repeat and dropped (two entries in one millisecond: the first
    counts); an entry earlier than the latest is *late* (a device's back-fill after a
    dropout). ``sample`` gives a late one only with ``keep_late`` (the archive places it with
    ``placed``); either way it counts in ``late``, which tells the live metrics to place the
    ride's samples again (workouts/rides/tracking.py)."""

    def __init__(self) -> None:
        self.first_ms: int | None = None
        self.last_t: float | None = None
        self.late = 0  # samples that came after a later one (placed by time, not dropped)

    def sample(self, entry_id: str, fields: dict[str, str], *, keep_late: bool = False) -> dict[str, float] | None:
        if is_service_entry(fields):  # an end marker, a marker: no sample
            return None
        ms = int(entry_id.split("-")[0])
        if self.first_ms is None:
            self.first_ms = ms
        fields = {STREAM_FIELD_ALIASES.get(k, k): v for k, v in fields.items()}
        t = self._time(ms, fields)
        if self.last_t is not None and t <= self.last_t:
            if t == self.last_t:
                return None  # a repeat of the latest
            self.late += 1
            if not keep_late:
                return None
        else:
            self.last_t = t
        return {"t": t, **{name: _number(fields.get(name)) for name in CHANNELS[1:]}}

    def time_of(self, entry_id: str, fields: dict[str, str]) -> float | None:
        """The time ``sample`` would give this entry, changing nothing (None for a service
        entry, or before any sample was read)."""
        if is_service_entry(fields) or self.first_ms is None:
            return None
        return self._time(int(entry_id.split("-")[0]), {STREAM_FIELD_ALIASES.get(k, k): v for k, v in fields.items()})

    def _time(self, ms: int, fields: dict[str, str]) -> float:
        t = _number(fields.get("t"))
        return (ms - self.first_ms) / 1000 if t != t else t  # no "t": the entry id's timestamp


def _plan_compliance(plan, samples) -> dict | None:
    """The ride's compliance to the stream's plan, as the live tracker counted it (the same
    samples, the same plan resolved for the same FTP); None without a plan."""
    t, power = samples.get("t"), samples.get("power")
    if plan is None or t is None or power is None or not len(t):
        return None
    summary = plan_compliance(plan.steps, t - t[0], power, start_s=plan.start_s,
                              tolerance_pct=settings.PLAN_TOLERANCE_PCT)
    return {"plan_id": plan.plan_id, "plan": plan.name, **summary}


def plan_laps(plan, samples) -> list[list]:
    """The plan's steps as lap starts, ``[[ride_s, step name], …]``: each step that begins
    before the ride's last sample (docs/rides.md, "Planned sessions")."""
    t = samples.get("t")
    if plan is None or t is None or not len(t):
        return []
    ride_end = float(t[-1] - t[0])
    return [[float(plan.start_s + step.start_s), step.name] for step in plan.steps
            if plan.start_s + step.start_s <= ride_end]


def marker_of(fields: dict[str, str]) -> tuple[float, str] | None:
    """A marker entry's (ride second, label); None for any other entry."""
    if MARKER_FIELD not in fields:
        return None
    ride_s = _number(fields.get(RIDE_S_FIELD))
    return (ride_s if ride_s == ride_s else 0.0), fields[MARKER_FIELD]


# A sample's ``t`` from here on is a Unix time (2001-09-09), not seconds into a ride (31 years).
UNIX_T_FROM = 1_000_000_000


class StreamSamples:
    """Accumulates stream entries into columnar arrays chunk by chunk (no list of dicts)."""

    def __init__(self) -> None:
        self.columns = {name: array("d") for name in CHANNELS}
        self.reader = EntryReader()
        self.count = 0
        self.last_id: str | None = None  # the last entry read (kept or dropped): what an archive covers
        self.markers: list[list] = []  # [[ride_s, label], …]: the laps of the workout

    def add(self, entry_id: str, fields: dict[str, str]) -> None:
        self.last_id = entry_id
        if (marker := marker_of(fields)) is not None:
            self.markers.append(list(marker))
            return
        sample = self.reader.sample(entry_id, fields, keep_late=True)
        if sample is None:
            return
        for name in CHANNELS:
            self.columns[name].append(sample[name])
        self.count += 1

    def placed(self) -> dict[str, np.ndarray]:
        """The samples in ride-time order (``placed``)."""
        return placed({name: np.frombuffer(column, dtype=float) for name, column in self.columns.items()},
                      late=self.reader.late > 0)

    def samples(self) -> Samples:
        """The workout's samples: in ride-time order, ``t`` in seconds from the first (a
        workout's ``t`` counts from its start, whatever clock the device sent)."""
        columns = self.placed()
        t = columns["t"]
        return samples_from_arrays(**{**columns, "t": t - t[0] if t.size else t})

    def started_at(self) -> dt.datetime:
        """When the ride began: its first sample's ``t`` when that is a Unix time (from
        ``UNIX_T_FROM`` on: a device's clock, as /ride/ sends it, back-filled samples
        included), else when its first entry arrived."""
        t = np.frombuffer(self.columns["t"], dtype=float)
        if t.size and (first := float(t.min())) >= UNIX_T_FROM:
            return dt.datetime.fromtimestamp(first, tz=dt.UTC)
        return dt.datetime.fromtimestamp((self.reader.first_ms or 0) / 1000, tz=dt.UTC)


def placed(columns: dict[str, np.ndarray], *, late: bool = True) -> dict[str, np.ndarray]:
    """Samples (columns with ``t``, in arrival order) in ride-time order: sorted by ``t``, a
    sample at the time of one that came before it dropped (the first that came counts). A
    ride without late samples is already in order (``late`` False: returned as it is)."""
    if not late:
        return columns
    order = np.argsort(columns["t"], kind="stable")  # equal times keep their arrival order
    t = columns["t"][order]
    keep = order[np.concatenate(([True], np.diff(t) > 0))]
    return {name: column[keep] for name, column in columns.items()}


def _number(value) -> float:
    if value is None or value == "":
        return float("nan")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number if number == number and abs(number) != float("inf") else float("nan")


async def stream_samples(name: str, *, chunk: int = ARCHIVE_CHUNK, progress=None, end: str = "+") -> StreamSamples | None:
    """Read a whole stream (up to the entry ``end``) in chunks into columnar arrays (8 bytes a
    value, no list of dicts); None if it does not exist. ``progress(n)`` is called after each
    chunk."""
    acc = StreamSamples()
    start = "-"
    while True:
        entries = await store.stream_range(name=name, start=start, end=end, count=chunk)
        if entries is None:
            return None
        for entry in entries:
            acc.add(entry.id, entry.data)
        if progress is not None:
            progress(len(entries))
        if len(entries) < chunk:
            return acc
        start = "(" + entries[-1].id


class RideNotEnded(Exception):
    """An archive of a ride that has not ended, without ``force`` (409)."""

    def __init__(self, name: str, state: str) -> None:
        self.name, self.state = name, state
        self.detail = f"stream {name!r} is in state {state}: archive it once the ride ended, or with force"
        super().__init__(self.detail)


@dataclass(frozen=True)
class Archived:
    workout: Workout
    stream_deleted: bool = False  # the stream is gone (nothing was published after the archive's read)
    entries_removed: int = 0  # entries deleted with the archive (those it read)
    delete_refused: bool = False  # the stream changed hands meanwhile: nothing was deleted


async def _ride_info(name: str, *, force: bool) -> store.StreamInfo:
    """The stream's info; LookupError when missing, RideNotEnded unless it ended or ``force``."""
    info = (await store.stream_info_batch(names=[name]))[name]
    if info is None:
        raise LookupError(f"stream {name!r} not found")
    state = ride_state(info)
    if state != "ended" and not force:
        raise RideNotEnded(name, state)
    return info


async def archive_stream(
    *, name: str, athlete, title: str | None = None, ftp: int | None = None, delete_stream: bool = False,
    actor: Actor = SYSTEM, owner_id: int | None | bool = False, progress=None, force: bool = False,
) -> Archived:
    """Archive an ended ride as a workout (same metrics as posting the same samples; the FTP
    given, else the stream's, else the athlete's profile FTP). A ride that has not ended is
    ``RideNotEnded`` unless ``force``. Once archived, an ended ride's metadata records the
    workout (``workout_id``); a forced archive of a ride that goes on does not, so the ride
    janitor still archives the whole ride when it ends. With ``delete_stream``, delete what
    was archived: the entries up to the last one read, only while ``actor`` may write the
    stream and its owner is still ``owner_id`` (default: the owner read before the entries),
    in one script (``stream_delete_archived``); entries published meanwhile, or a stream
    re-created by someone else, stay."""
    info = await _ride_info(name, force=force)
    if owner_id is False:
        owner_id = info.meta.owner_id
    acc = await stream_samples(name, progress=progress)
    if acc is None:
        raise LookupError(f"stream {name!r} not found")
    if acc.count == 0:
        raise SamplesError(f"stream {name!r} has no entries")
    # The profile's values go into the worker's computation: the workout does not compute again.
    ftp = ftp or info.meta.ftp or await sync_to_async(profile_ftp)(athlete)
    physiology = await sync_to_async(profile_physiology)(athlete)
    plan = await sync_to_async(ride_plan)(info.meta, ftp=ftp)
    samples = acc.samples()
    # The laps: the plan's steps and the markers, in ride time (a marker at a step's start wins).
    markers = sorted(plan_laps(plan, samples) + acc.markers, key=lambda m: m[0])
    prepared = await offload.run(
        prepare_samples, samples, started_at=acc.started_at(), ftp=ftp, title=title or name,
        physiology=physiology, markers=markers,
    )
    compliance = _plan_compliance(plan, samples)
    create = sync_to_async(workout_create_prepared)
    workout = await create(athlete=athlete, prepared=prepared, source=Workout.Source.STREAM, stream=name,
                           plan_compliance=compliance)
    if ride_state(info) == "ended":
        await store.stream_archived_as(name=name, workout_id=workout.pk)
    if not delete_stream:
        return Archived(workout)
    try:
        outcome = await store.stream_delete_archived(name=name, up_to=acc.last_id, owner_id=owner_id, actor=actor)
    except store.WriteRefused:
        return Archived(workout, delete_refused=True)
    return Archived(workout, stream_deleted=outcome.deleted, entries_removed=outcome.removed)


async def workout_from_stream(
    *, name: str, athlete, title: str | None = None, ftp: int | None = None, delete_stream: bool = False,
    progress=None, force: bool = False,
) -> Workout:
    """``archive_stream`` as the system (the management command), the workout only."""
    archived = await archive_stream(
        name=name, athlete=athlete, title=title, ftp=ftp, delete_stream=delete_stream, progress=progress,
        force=force,
    )
    return archived.workout
