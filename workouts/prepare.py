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
from streams.store.names import MAX_MARKER_LABEL, MAX_MARKERS, parse_json
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
    physiology: dict = field(default_factory=dict)  # critical_power, w_prime, max_heart_rate given
    markers: list[list] = field(default_factory=list)  # [[ride_s, label], …]
    laps: list[dict] = field(default_factory=list)
    title: str | None = None
    notes: str = ""
    athlete: object = None  # the username the body names, checked by the caller


def metrics_of(samples: Samples | None, *, ftp: int | None, pauses, critical_power=None, w_prime=None,
               max_heart_rate=None) -> dict:
    """Every derived field of a workout (the one place the model's metrics come from)."""
    physiology = {"critical_power": critical_power, "w_prime": w_prime, "max_heart_rate": max_heart_rate}
    if samples is None:
        return ride.ride_metrics([], ftp=ftp, **physiology).as_dict()
    return ride.ride_metrics(
        samples.get("t"), samples.get("power"), samples.get("heart_rate"), samples.get("cadence"),
        ftp=ftp, pauses=[tuple(p) for p in pauses or ()], **physiology,
    ).as_dict()


def laps_of(samples: Samples | None, *, markers, pauses) -> list[dict]:
    """The laps of a workout (the one place they come from): its markers as lap starts."""
    if samples is None or not markers:
        return []
    return ride.laps_from_boundaries(
        samples.get("t"), samples.get("power"), samples.get("heart_rate"),
        boundaries=[(float(s), label) for s, label in markers], pauses=[tuple(p) for p in pauses or ()],
    )


def prepare_samples(samples: Samples, *, started_at: dt.datetime, ftp: int | None, pauses=(),
                    physiology: dict | None = None, markers=(), **text) -> Prepared:
    """``physiology``: critical_power, w_prime, max_heart_rate (any of them; the athlete's
    profile fills the others when the workout is created). ``markers``: [[ride_s, label], …],
    the starts of laps."""
    pauses = [tuple(p) for p in pauses]
    markers = [list(m) for m in markers]
    physiology = {k: v for k, v in (physiology or {}).items() if v is not None}
    return Prepared(
        started_at=started_at, ftp=ftp, blob=encode(samples),
        metrics=metrics_of(samples, ftp=ftp, pauses=pauses, **physiology), pauses=pauses,
        physiology=physiology, markers=markers, laps=laps_of(samples, markers=markers, pauses=pauses), **text,
    )


def markers_field(value) -> list[list]:
    """``[[ride_s, label], …]`` from a client (the API's ``markers``, the admin): ride seconds
    are numbers 0-10^7, labels 1-80 characters (stripped) or null; at most 500."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_MARKERS:
        raise WorkoutInputError(f"markers must be a list of at most {MAX_MARKERS} [ride_s, label] pairs")
    out = []
    for k, item in enumerate(value):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise WorkoutInputError(f"markers[{k}] must be a [ride_s, label] pair")
        ride_s, label = item
        if isinstance(ride_s, bool) or not isinstance(ride_s, (int, float)) or not 0 <= ride_s <= 1e7:
            raise WorkoutInputError(f"markers[{k}]: ride_s must be a number of seconds from 0 to 10000000")
        if label is not None:
            label = text_field(label, field=f"markers[{k}] label", max_length=MAX_MARKER_LABEL)
        out.append([float(ride_s), label])
    return out


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
    markers = markers_field(body.get("markers"))
    return prepare_samples(samples, started_at=started_at, ftp=ftp, markers=markers, title=title, notes=notes,
                           athlete=body.get("athlete"))


def prepare_fit(data: bytes, *, ftp: int | None, physiology: dict | None = None) -> Prepared:
    """FIT bytes → Prepared (the file's threshold power when ``ftp`` is None). Raises FitError."""
    activity = read_fit(data)
    return prepare_samples(activity.samples, started_at=activity.started_at, ftp=ftp or activity.ftp,
                           pauses=activity.pauses, physiology=physiology)


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
