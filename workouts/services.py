"""Workout services: every entry point (admin, API, commands) creates and saves workouts here,
and the metrics are computed here (``workout_save``): the model only stores them."""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterable

from django.contrib.auth import get_user_model

from workouts.errors import WorkoutInputError
from workouts.metrics import with_ftp
from workouts.models import DERIVED_FIELDS, AthleteProfile, Workout
from workouts.prepare import Prepared, metrics_of, prepare_fit, prepare_samples
from workouts.samples import CHANNELS, Samples, SamplesError, samples_from_arrays

STREAM_FIELD_ALIASES = {"hr": "heart_rate", "heartrate": "heart_rate", "cad": "cadence", "watts": "power"}
ARCHIVE_CHUNK = 5000


def athlete_by_username(username: str):
    User = get_user_model()
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
        raise WorkoutInputError(f"no athlete named {username!r}") from None


def profile_ftp(athlete) -> int | None:
    return AthleteProfile.objects.filter(athlete=athlete).values_list("ftp", flat=True).first()


def workout_create(
    *,
    athlete,
    title: str,
    started_at: dt.datetime,
    samples: Samples,
    ftp: int | None = None,
    source: str = Workout.Source.API,
    sport: str = Workout.Sport.CYCLING,
    notes: str = "",
    pauses: list[tuple[float, float]] | None = None,
) -> Workout:
    """Create a workout; its metrics are computed as it is saved. Without ``ftp``, the
    athlete's profile FTP (if any) is the workout's."""
    if ftp is None:
        ftp = profile_ftp(athlete)
    workout = Workout(
        athlete=athlete, title=title, started_at=started_at, ftp=ftp, source=source, sport=sport,
        notes=notes, pauses=[list(p) for p in pauses or ()],
    )
    workout.samples = samples
    return workout_save(workout)


def workout_create_prepared(*, athlete, prepared: Prepared, source: str, title: str | None = None) -> Workout:
    """Create a workout from a Prepared one (samples encoded and metrics computed off the
    event loop, in a worker process): saving does not compute them again. Without an FTP,
    the athlete's profile FTP (if any) is the workout's: only IF and TSS change."""
    if prepared.ftp is None and (ftp := profile_ftp(athlete)) is not None:
        prepared.ftp, prepared.metrics = ftp, with_ftp(prepared.metrics, ftp)
    workout = Workout(
        athlete=athlete, title=title or prepared.title or "", notes=prepared.notes, source=source,
    )
    workout.apply_prepared(prepared)
    return workout_save(workout)


def workout_from_fit(data: bytes, *, athlete, title: str, ftp: int | None = None) -> Workout:
    """Create a workout from a FIT file in this process (management commands); raises FitError."""
    return workout_create_prepared(
        athlete=athlete, prepared=prepare_fit(data, ftp=ftp), source=Workout.Source.FIT, title=title
    )


def workout_save(workout: Workout, *, update_fields=None, recompute: bool = False) -> Workout:
    """Save a workout with metrics that match its samples, pauses and FTP: computed here
    unless they were just computed for exactly these inputs (a Prepared workout)."""
    if recompute or not workout.metrics_current():
        workout.set_metrics(metrics_of(workout.samples, ftp=workout.ftp, pauses=workout.pauses))
    if update_fields is not None:
        update_fields = set(update_fields) | set(DERIVED_FIELDS)
    workout.save(update_fields=update_fields)
    return workout


def workouts_recompute(workouts: Iterable[Workout]) -> int:
    """Refresh derived fields (e.g. after a formula change). Returns how many were saved."""
    count = 0
    for workout in workouts:
        workout_save(workout, update_fields=["updated_at"], recompute=True)
        count += 1
    return count


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

    def add(self, entry_id: str, fields: dict[str, str]) -> None:
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
    from streams import operations

    acc = StreamSamples()
    start = "-"
    while True:
        entries = await operations.stream_range(name=name, start=start, end="+", count=chunk)
        if entries is None:
            return None
        for entry in entries:
            acc.add(entry.id, entry.data)
        if progress is not None:
            progress(len(entries))
        if len(entries) < chunk:
            return acc
        start = "(" + entries[-1].id


async def workout_from_stream(
    *, name: str, athlete, title: str | None = None, ftp: int | None = None, delete_stream: bool = False,
    progress=None,
) -> Workout:
    """Archive a stream as a workout (same metrics as posting the same samples)."""
    from asgiref.sync import sync_to_async

    from streams import operations
    from streamsite import offload

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
    if delete_stream:
        await operations.streams_delete(names=[name])
    return workout
