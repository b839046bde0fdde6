"""FIT files → workouts, with fitdecode (streaming, MIT). Records give the samples; timer
stop/start events give the pauses; the file's threshold power gives FTP when none is given."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import fitdecode

from workouts.errors import WorkoutInputError
from workouts.samples import Samples, SamplesError, samples_from_arrays

RECORD_FIELDS = {
    "power": ("power",),
    "heart_rate": ("heart_rate",),
    "cadence": ("cadence",),
    "speed": ("enhanced_speed", "speed"),
    "distance": ("distance",),
    "altitude": ("enhanced_altitude", "altitude"),
}


class FitError(WorkoutInputError):
    """Not a readable FIT activity; the message says why."""


def _value(frame, names):
    for name in names:
        if frame.has_field(name):
            value = frame.get_value(name)
            if isinstance(value, (int, float)):
                return float(value)
    return float("nan")


@dataclass(frozen=True)
class FitActivity:
    """What a FIT file holds for a workout: samples (``t`` in seconds from the first record),
    timer pauses (seconds), the start (UTC) and the file's threshold power, if any."""

    started_at: dt.datetime
    samples: Samples
    pauses: list[tuple[float, float]]
    ftp: int | None


def read_fit(data: bytes) -> FitActivity:
    """Parse FIT bytes. Raises FitError (a WorkoutInputError) naming the problem."""
    times: list[dt.datetime] = []
    columns: dict[str, list[float]] = {name: [] for name in RECORD_FIELDS}
    timer: list[tuple[str, dt.datetime]] = []
    ftp = None
    try:
        with fitdecode.FitReader(io.BytesIO(data), check_crc=fitdecode.CrcCheck.RAISE) as reader:
            for frame in reader:
                if frame.frame_type != fitdecode.FIT_FRAME_DATA:
                    continue
                if frame.name == "record" and frame.has_field("timestamp"):
                    ts = frame.get_value("timestamp")
                    if times and ts <= times[-1]:
                        continue  # duplicate second: keep the first
                    times.append(ts)
                    for name, fields in RECORD_FIELDS.items():
                        columns[name].append(_value(frame, fields))
                elif frame.name == "event" and frame.has_field("event") and frame.get_value("event") == "timer":
                    kind = frame.get_value("event_type") if frame.has_field("event_type") else None
                    if frame.has_field("timestamp") and kind in ("start", "stop", "stop_all", "stop_disable_all"):
                        timer.append(("start" if kind == "start" else "stop", frame.get_value("timestamp")))
                elif frame.name in ("zones_target", "user_profile") and ftp is None:
                    if frame.has_field("functional_threshold_power"):
                        value = frame.get_value("functional_threshold_power")
                        ftp = int(value) if isinstance(value, (int, float)) and value > 0 else None
    except fitdecode.FitError as exc:
        raise FitError(f"not a readable FIT file ({exc})") from None
    if not times:
        raise FitError("the FIT file has no records with timestamps")
    start = times[0]
    t = [(ts - start).total_seconds() for ts in times]
    pauses = []
    stopped_at = None
    for kind, ts in timer:
        offset = (ts - start).total_seconds()
        if kind == "stop" and stopped_at is None:
            stopped_at = offset
        elif kind == "start" and stopped_at is not None:
            pauses.append((stopped_at, offset))
            stopped_at = None
    try:
        samples = samples_from_arrays(t=t, **columns)
    except SamplesError as exc:
        raise FitError(str(exc)) from None
    started_at = start if start.tzinfo is not None else start.replace(tzinfo=dt.UTC)
    return FitActivity(started_at=started_at, samples=samples, pauses=pauses, ftp=ftp)
