"""Workout input → what is stored, without Django: parse, validate, compute metrics, encode.

Everything here is CPU-bound and pure (bytes and numbers in, picklable values out), so the
server runs it in a worker process (``streams.core.offload``): ``json.loads`` of a 32 MiB body
holds the GIL for ~0.6 s, which in a thread still stalls every live listener of the process.
Errors are ``WorkoutInputError`` (``FitError`` and ``SamplesError`` are kinds of it) with a
message naming the problem; they pickle.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from streams.core.errors import InvalidInput
from streams.store.names import parse_json
from workouts import metrics as ride
from workouts.errors import WorkoutInputError
from workouts.fit import read_fit
from workouts.samples import Samples, encode, samples_from_columns


@dataclass
class Prepared:
    """A validated workout ready to save: the encoded samples and the metrics of exactly
    these samples, FTP and pauses (the model saves them without computing again)."""

    started_at: dt.datetime
    ftp: int | None
    blob: bytes
    metrics: dict
    pauses: list[tuple[float, float]] = field(default_factory=list)
    title: str | None = None
    notes: str = ""
    athlete: object = None  # the username the body names, checked by the caller


def metrics_of(samples: Samples | None, *, ftp: int | None, pauses) -> dict:
    """Every derived field of a workout (the one place the model's metrics come from)."""
    if samples is None:
        return ride.ride_metrics([], ftp=ftp).as_dict()
    return ride.ride_metrics(
        samples.get("t"), samples.get("power"), samples.get("heart_rate"), samples.get("cadence"),
        ftp=ftp, pauses=[tuple(p) for p in pauses or ()],
    ).as_dict()


def prepare_samples(samples: Samples, *, started_at: dt.datetime, ftp: int | None, pauses=(), **text) -> Prepared:
    pauses = [tuple(p) for p in pauses]
    return Prepared(
        started_at=started_at, ftp=ftp, blob=encode(samples), metrics=metrics_of(samples, ftp=ftp, pauses=pauses),
        pauses=pauses, **text,
    )


def prepare_json(raw: bytes) -> Prepared:
    """A ``POST /api/workouts`` body → Prepared. Raises WorkoutInputError."""
    try:
        body = parse_json(raw)
    except InvalidInput as exc:
        raise WorkoutInputError(str(exc)) from None
    if not isinstance(body, dict):
        raise WorkoutInputError("request body must be a JSON object")
    title = text_field(body.get("title"), field="title", max_length=200, required=True)
    notes = text_field(body.get("notes"), field="notes", max_length=100_000) or ""
    started_at = parse_started_at(body.get("started_at"))
    ftp = ftp_field(body.get("ftp"))
    samples = samples_from_columns(body.get("samples"))
    return prepare_samples(samples, started_at=started_at, ftp=ftp, title=title, notes=notes, athlete=body.get("athlete"))


def prepare_fit(data: bytes, *, ftp: int | None) -> Prepared:
    """FIT bytes → Prepared (the file's threshold power when ``ftp`` is None). Raises FitError."""
    activity = read_fit(data)
    return prepare_samples(activity.samples, started_at=activity.started_at, ftp=ftp or activity.ftp,
                           pauses=activity.pauses)


def parse_started_at(value) -> dt.datetime:
    if not isinstance(value, str):
        raise WorkoutInputError("started_at must be an ISO 8601 date-time string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WorkoutInputError(f"started_at={value!r} is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def text_field(value, *, field: str, max_length: int, required: bool = False) -> str | None:
    """A client string for a text column: stripped, bounded, and without NUL characters
    (PostgreSQL cannot store them: they were a 500 there)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise WorkoutInputError(f"{field} is required (1-{max_length} characters)")
        return None
    if not isinstance(value, str):
        raise WorkoutInputError(f"{field} must be a string")
    if "\x00" in value:
        raise WorkoutInputError(f"{field} must not contain NUL characters")
    value = value.strip()
    if len(value) > max_length:
        raise WorkoutInputError(f"{field} is longer than {max_length} characters")
    return value


def ftp_field(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2000:
        raise WorkoutInputError("ftp must be a whole number of watts between 1 and 2000")
    return value
