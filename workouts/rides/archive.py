"""A finished stream becomes a workout: the stream's entries read in chunks into columnar
samples (``stream_samples``) and archived with the same metrics as posting the same samples
(``workout_from_stream``). ``EntryReader`` is the one rule that turns a stream entry into a
sample, for the archive and for the live ride metrics (workouts/rides/tracking.py) alike."""

from __future__ import annotations

import datetime as dt
from array import array
from dataclasses import dataclass

from asgiref.sync import sync_to_async

from streams.access.identity import SYSTEM, Actor
from streams.core import offload
from streams.store import services as store
from workouts.models import Workout
from workouts.prepare import prepare_samples
from workouts.samples import CHANNELS, Samples, SamplesError, samples_from_arrays
from workouts.services import workout_create_prepared

STREAM_FIELD_ALIASES = {"hr": "heart_rate", "heartrate": "heart_rate", "cad": "cadence", "watts": "power"}
ARCHIVE_CHUNK = 5000


class EntryReader:
    """Stream entries → samples, the one rule for archives and live metrics: field aliases
    (``hr``, ``cad``, ``watts``), ``t`` from the ``t`` field or else from the entry id's
    millisecond timestamp (seconds since the first entry), a value that is not a finite number
    is missing, and an entry not after the previous one in time is dropped (two entries in
    one millisecond: the first counts)."""

    def __init__(self) -> None:
        self.first_ms: int | None = None
        self.last_t: float | None = None

    def sample(self, entry_id: str, fields: dict[str, str]) -> dict[str, float] | None:
        ms = int(entry_id.split("-")[0])
        if self.first_ms is None:
            self.first_ms = ms
        fields = {STREAM_FIELD_ALIASES.get(k, k): v for k, v in fields.items()}
        t = _number(fields.get("t"))
        if t != t:  # no "t" field: the entry id's timestamp gives the time
            t = (ms - self.first_ms) / 1000
        if self.last_t is not None and t <= self.last_t:
            return None
        self.last_t = t
        return {"t": t, **{name: _number(fields.get(name)) for name in CHANNELS[1:]}}


class StreamSamples:
    """Accumulates stream entries into columnar arrays chunk by chunk (no list of dicts)."""

    def __init__(self) -> None:
        self.columns = {name: array("d") for name in CHANNELS}
        self.reader = EntryReader()
        self.count = 0
        self.last_id: str | None = None  # the last entry read (kept or dropped): what an archive covers

    def add(self, entry_id: str, fields: dict[str, str]) -> None:
        self.last_id = entry_id
        sample = self.reader.sample(entry_id, fields)
        if sample is None:
            return
        for name in CHANNELS:
            self.columns[name].append(sample[name])
        self.count += 1

    def samples(self) -> Samples:
        return samples_from_arrays(**self.columns)

    def started_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp((self.reader.first_ms or 0) / 1000, tz=dt.UTC)


def _number(value) -> float:
    if value is None or value == "":
        return float("nan")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number if number == number and abs(number) != float("inf") else float("nan")


async def stream_samples(name: str, *, chunk: int = ARCHIVE_CHUNK, progress=None) -> StreamSamples | None:
    """Read a whole stream in chunks into columnar arrays (8 bytes a value, no list of
    dicts); None if it does not exist. ``progress(n)`` is called after each chunk."""
    acc = StreamSamples()
    start = "-"
    while True:
        entries = await store.stream_range(name=name, start=start, end="+", count=chunk)
        if entries is None:
            return None
        for entry in entries:
            acc.add(entry.id, entry.data)
        if progress is not None:
            progress(len(entries))
        if len(entries) < chunk:
            return acc
        start = "(" + entries[-1].id


@dataclass(frozen=True)
class Archived:
    workout: Workout
    stream_deleted: bool = False  # the stream is gone (nothing was published after the archive's read)
    entries_removed: int = 0  # entries deleted with the archive (those it read)
    delete_refused: bool = False  # the stream changed hands meanwhile: nothing was deleted


async def archive_stream(
    *, name: str, athlete, title: str | None = None, ftp: int | None = None, delete_stream: bool = False,
    actor: Actor = SYSTEM, owner_id: int | None | bool = False, progress=None,
) -> Archived:
    """Archive a stream as a workout (same metrics as posting the same samples). With
    ``delete_stream``, delete what was archived: the entries up to the last one read, only
    while ``actor`` may write the stream and its owner is still ``owner_id`` (default: the
    owner read before the entries), in one script (``stream_delete_archived``); entries
    published meanwhile, or a stream re-created by someone else, stay."""
    if owner_id is False:
        owner_id = (await store.stream_meta(names=[name]))[name].owner_id
    acc = await stream_samples(name, progress=progress)
    if acc is None:
        raise LookupError(f"stream {name!r} not found")
    if acc.count == 0:
        raise SamplesError(f"stream {name!r} has no entries")
    prepared = await offload.run(
        prepare_samples, acc.samples(), started_at=acc.started_at(), ftp=ftp, title=title or name
    )
    create = sync_to_async(workout_create_prepared)
    workout = await create(athlete=athlete, prepared=prepared, source=Workout.Source.STREAM)
    if not delete_stream:
        return Archived(workout)
    try:
        outcome = await store.stream_delete_archived(name=name, up_to=acc.last_id, owner_id=owner_id, actor=actor)
    except store.WriteRefused:
        return Archived(workout, delete_refused=True)
    return Archived(workout, stream_deleted=outcome.deleted, entries_removed=outcome.removed)


async def workout_from_stream(
    *, name: str, athlete, title: str | None = None, ftp: int | None = None, delete_stream: bool = False,
    progress=None,
) -> Workout:
    """``archive_stream`` as the system (the management command), the workout only."""
    archived = await archive_stream(
        name=name, athlete=athlete, title=title, ftp=ftp, delete_stream=delete_stream, progress=progress
    )
    return archived.workout
