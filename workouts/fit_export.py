"""Workouts → FIT activity files, with fit-tool (BSD): the reverse of ``workouts/fit.py``.

Pure and Django-free (samples, laps and a summary in, bytes out), so the server runs it in a
worker process (``streams.core.offload``). The file: file_id (activity, manufacturer
development, created at the start), zones_target (the FTP, which ``read_fit`` reads back), a
timer start event, one record per second of the ride (its first sample) with the channels the
workout has, the ``pauses`` as timer stop/start events, a final timer stop, one lap per lap of
the workout (or one for the whole ride), a session with the totals, and an activity.

FIT timestamps are whole seconds: a sample's record is at ``started_at + t`` to the second, and
of the samples in one second only the first is written (the importer keeps the first of a
second too). Power, heart rate and cadence are written to the nearest whole number; a value
missing (NaN) or outside what its FIT field holds is left out of that record.

Every message is encoded by fit-tool, except the records' data, which are packed in bulk with
numpy by the rules fit-tool's record definition gives (field numbers, base types, scale,
offset): building one fit-tool message per sample costs ~0.7 ms, two minutes for a
200,000-sample ride. A test checks the packed records equal fit-tool's own encoding, byte for
byte.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from fit_tool.base_type import BaseType
from fit_tool.data_message import DataMessage
from fit_tool.definition_message import DefinitionMessage
from fit_tool.fit_file_builder import FitFileBuilder
from fit_tool.fit_file_header import FitFileHeader
from fit_tool.profile.messages.activity_message import ActivityMessage
from fit_tool.profile.messages.event_message import EventMessage
from fit_tool.profile.messages.file_id_message import FileIdMessage
from fit_tool.profile.messages.lap_message import LapMessage
from fit_tool.profile.messages.record_message import RecordMessage
from fit_tool.profile.messages.session_message import SessionMessage
from fit_tool.profile.messages.zones_target_message import ZonesTargetMessage
from fit_tool.profile.profile_type import Activity, Event, EventType, FileType, Manufacturer, Sport
from fit_tool.record import Record
from fit_tool.utils.crc import crc16

from workouts.errors import WorkoutInputError
from workouts.samples import Samples, decode

# Sample channel → the record message's property (its field: number, base type, scale, offset).
RECORD_CHANNELS = ("power", "heart_rate", "cadence", "speed", "distance", "altitude")
WHOLE_NUMBERS = ("power", "heart_rate", "cadence")  # written rounded, as devices record them
SPORTS = {"cycling": Sport.CYCLING, "running": Sport.RUNNING}
MEDIA_TYPE = "application/vnd.ant.fit"  # what the API and the admin answer with
RECORD_LOCAL_ID = 1  # the records' local message type; every other message uses 0
FIT_EPOCH_MS = 631_065_600_000  # 1989-12-31T00:00:00Z, FIT time 0
NUMPY_TYPES = {BaseType.UINT8: "<u1", BaseType.UINT16: "<u2", BaseType.UINT32: "<u4"}


def attachment(workout_id: int) -> str:
    """The Content-Disposition of a workout's FIT file."""
    return f'attachment; filename="workout-{int(workout_id)}.fit"'


class NoSamplesToExport(WorkoutInputError):
    """A workout without samples has no records to write (the API answers 409)."""

    status = 409


@dataclass(frozen=True)
class FitSummary:
    """The workout's totals for the session (and the one lap of a ride without laps): the
    stored metrics, in their units (watts, bpm, rpm, seconds)."""

    started_at: dt.datetime
    sport: str = "cycling"
    ftp: int | None = None
    avg_power: float | None = None
    max_power: float | None = None
    normalized_power: float | None = None
    intensity_factor: float | None = None
    tss: float | None = None
    avg_hr: float | None = None
    max_hr: float | None = None
    avg_cadence: float | None = None
    work_kj: float | None = None


def workout_fit_from_blob(blob: bytes, *, summary: FitSummary, laps: list[dict], pauses) -> bytes:
    """``workout_fit`` of a workout's stored samples (what the server sends a worker: the
    compressed blob is ~10x smaller to pickle than the arrays)."""
    samples = decode(blob)
    if samples is None:
        raise NoSamplesToExport("the workout has no samples to export")
    return workout_fit(samples, summary=summary, laps=laps, pauses=pauses)


def workout_fit(samples: Samples, *, summary: FitSummary, laps: list[dict], pauses=()) -> bytes:
    """A FIT activity file of these samples (``t`` seconds from ``summary.started_at``), laps
    (``workouts.metrics.laps_from_boundaries``'s dicts; none = one lap for the ride) and timer
    pauses (``[[start_s, end_s], …]`` in the samples' time)."""
    if len(samples) == 0:
        raise NoSamplesToExport("the workout has no samples to export")
    ride_start = summary.started_at.timestamp()  # Unix seconds of t = 0 (and of the pauses)
    seconds, rows = _one_sample_a_second(samples.get("t"), start_s=ride_start)
    columns = {name: samples.get(name)[rows] for name in RECORD_CHANNELS if samples.get(name) is not None}
    first_s, end_s = int(seconds[0]), int(seconds[-1]) + 1
    ride_s = (seconds - first_s).astype(float)
    pauses = [(float(a), float(b)) for a, b in pauses or ()]
    timer_s = _timer_time(first_s, end_s, pauses, base=ride_start)
    body = b"".join([
        _encoded(_file_id(int(np.floor(ride_start))), *_zones_target(summary.ftp), _timer(first_s, EventType.START)),
        *_records_and_pauses(seconds, columns, pauses, first_s=first_s, ride_start=ride_start),
        _encoded(_timer(end_s, EventType.STOP_ALL)),
        _encoded(*_laps(laps, summary, columns, ride_s, pauses, first_s=first_s, end_s=end_s, ride_start=ride_start)),
        _encoded(_session(summary, columns, pauses, first_s=first_s, end_s=end_s, laps=max(len(laps), 1),
                          ride_start=ride_start),
                 _activity(end_s, timer_s=timer_s)),
    ])
    return _framed(body)


# --- records -------------------------------------------------------------------------------------
def _one_sample_a_second(t: np.ndarray, *, start_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole Unix second of each sample's record, and which samples get one: the first of
    each second."""
    seconds = np.floor(start_s + t).astype(np.int64)
    keep = np.concatenate(([True], np.diff(seconds) > 0))
    return seconds[keep], np.flatnonzero(keep)


def record_template(channels) -> RecordMessage:
    """A record message with a timestamp and ``channels`` set, whose definition fit-tool made:
    the layout every record of the file follows."""
    message = RecordMessage(local_id=RECORD_LOCAL_ID)
    message.timestamp = FIT_EPOCH_MS  # any valid value: only the layout is used
    for name in channels:
        setattr(message, name, 0)
    message.set_definition_message(DefinitionMessage.from_data_message(message))
    return message


def packed_records(template: RecordMessage, timestamps_ms: np.ndarray, columns: dict[str, np.ndarray]) -> bytes:
    """Record data messages for the template's definition, one per timestamp (ms since the
    Unix epoch, as fit-tool takes them): each field's value is ``round((value + offset) *
    scale)``, fit-tool's encoding; missing or out of range, the base type's invalid value."""
    fields = {field.field_id: field for field in template.fields}
    definitions = template.definition_message.field_definitions
    dtype = np.dtype([("header", "u1"), *((str(d.field_id), NUMPY_TYPES[d.base_type]) for d in definitions)])
    out = np.zeros(timestamps_ms.size, dtype=dtype)
    out["header"] = RECORD_LOCAL_ID
    for definition in definitions:
        field = fields[definition.field_id]
        values = timestamps_ms if field.name == "timestamp" else columns[field.name]
        out[str(definition.field_id)] = _encoded_column(values, field)
    return out.tobytes()


def _encoded_column(values: np.ndarray, field) -> np.ndarray:
    base = field.base_type
    raw = np.rint((np.asarray(values, dtype=float) + (field.offset or 0.0)) * (field.scale or 1.0))
    valid = ~np.isnan(raw) & (raw >= base.min) & (raw < base.invalid_raw_value())
    return np.where(valid, raw, base.invalid_raw_value()).astype(NUMPY_TYPES[base])


def _rounded(name: str, values: np.ndarray) -> np.ndarray:
    return np.rint(values) if name in WHOLE_NUMBERS else values


def _records_and_pauses(seconds, columns, pauses, *, first_s: int, ride_start: float) -> list[bytes]:
    """The record definition, then the records, with each pause's stop and start event where
    it falls among them."""
    template = record_template(columns)
    values = {name: _rounded(name, v) for name, v in columns.items()}
    timestamps_ms = seconds.astype(float) * 1000
    events = sorted(
        [(int(np.floor(ride_start + a)), EventType.STOP_ALL) for a, _b in pauses]
        + [(int(np.floor(ride_start + b)), EventType.START) for _a, b in pauses],
        key=lambda e: e[0],
    )
    parts = [Record.from_message(template.definition_message).to_bytes()]
    done = 0
    for at, kind in events:
        upto = int(np.searchsorted(seconds, at, side="right"))  # records at or before the event
        parts.append(packed_records(template, timestamps_ms[done:upto], {k: v[done:upto] for k, v in values.items()}))
        parts.append(_encoded(_timer(max(at, first_s), kind)))
        done = upto
    parts.append(packed_records(template, timestamps_ms[done:], {k: v[done:] for k, v in values.items()}))
    return parts


# --- the other messages (fit-tool encodes them) --------------------------------------------------
def _encoded(*messages: DataMessage) -> bytes:
    """Definitions and data records of ``messages``, fit-tool's (a definition before the first
    message of each layout; local message type 0, whose layout the records' 1 never disturbs)."""
    builder = FitFileBuilder(auto_define=True)
    builder.add_all(messages)
    return b"".join(record.to_bytes() for record in builder.records)


def _file_id(start_s: int) -> FileIdMessage:
    message = FileIdMessage()
    message.type = FileType.ACTIVITY
    message.manufacturer = Manufacturer.DEVELOPMENT.value
    message.product = 0
    message.serial_number = 1
    message.time_created = start_s * 1000
    return message


def _zones_target(ftp: int | None) -> list[ZonesTargetMessage]:
    """The FTP where ``workouts.fit.read_fit`` (and devices) read it back."""
    if not ftp:
        return []
    message = ZonesTargetMessage()
    message.functional_threshold_power = int(ftp)
    return [message]


def _timer(at_s: int, kind: EventType) -> EventMessage:
    message = EventMessage()
    message.timestamp = at_s * 1000
    message.event = Event.TIMER
    message.event_type = kind
    return message


def _timer_time(a: float, b: float, pauses, *, base: float) -> float:
    """Seconds of [a, b) (Unix seconds) outside the pauses (ride seconds from ``base``)."""
    paused = sum(max(0.0, min(b, base + pe) - max(a, base + ps)) for ps, pe in pauses)
    return max(0.0, (b - a) - paused)


def _distance_between(columns, mask: np.ndarray | None = None) -> float | None:
    distance = columns.get("distance")
    if distance is None:
        return None
    values = distance if mask is None else distance[mask]
    values = values[~np.isnan(values)]
    return float(values.max() - values.min()) if values.size else None


def _set(message, **values) -> None:
    """Set the fields given a value (None leaves a field out)."""
    for name, value in values.items():
        if value is not None:
            setattr(message, name, value)


def _whole(value) -> int | None:
    return None if value is None else int(round(value))


def _laps(laps, summary: FitSummary, columns, ride_s, pauses, *, first_s: int, end_s: int, ride_start: float):
    """One lap message per lap; a ride without laps is one lap, with the ride's totals."""
    if not laps:
        laps = [{"start_s": 0.0, "end_s": float(end_s - first_s), "avg_power": summary.avg_power,
                 "np": summary.normalized_power, "avg_hr": summary.avg_hr, "max_power": summary.max_power,
                 "max_hr": summary.max_hr, "avg_cadence": summary.avg_cadence}]
    return [_lap(k, lap, summary, columns, ride_s, pauses, first_s=first_s, ride_start=ride_start)
            for k, lap in enumerate(laps)]


def _lap(index: int, lap: dict, summary: FitSummary, columns, ride_s, pauses, *, first_s: int,
         ride_start: float) -> LapMessage:
    start, end = first_s + float(lap["start_s"]), first_s + float(lap["end_s"])
    in_lap = (ride_s >= float(lap["start_s"])) & (ride_s < float(lap["end_s"]))
    # A workout's laps store averages and NP; the maxima and cadence come from the lap's records
    # where the lap does not carry them (the whole-ride lap carries the workout's).
    from_records = {"max_power": lambda: _lap_values(columns, "power", in_lap, np.max),
                    "max_hr": lambda: _lap_values(columns, "heart_rate", in_lap, np.max),
                    "avg_cadence": lambda: _lap_values(columns, "cadence", in_lap, turning_mean)}
    lap = {**lap, **{key: value() for key, value in from_records.items() if key not in lap}}
    message = LapMessage()
    _set(
        message, message_index=index, timestamp=int(np.ceil(end)) * 1000, start_time=int(np.floor(start)) * 1000,
        event=Event.LAP, event_type=EventType.STOP, sport=SPORTS.get(summary.sport, Sport.GENERIC),
        total_elapsed_time=end - start, total_timer_time=_timer_time(start, end, pauses, base=ride_start),
        avg_power=_whole(lap.get("avg_power")), max_power=_whole(lap.get("max_power")),
        normalized_power=_whole(lap.get("np")), avg_heart_rate=_whole(lap.get("avg_hr")),
        max_heart_rate=_whole(lap.get("max_hr")), avg_cadence=_whole(lap.get("avg_cadence")),
        total_distance=_distance_between(columns, in_lap),
    )
    return message


def _lap_values(columns, name: str, in_lap: np.ndarray, reduce) -> float | None:
    """``reduce`` of the lap's records of ``name`` (holes left out); None without any."""
    values = columns.get(name)
    if values is None:
        return None
    values = values[in_lap]
    values = values[~np.isnan(values)]
    return reduce(values) if values.size else None


def turning_mean(cadence: np.ndarray) -> float | None:
    """A lap's average cadence: the plain mean of its one-a-second records with zeros (coasting)
    left out — the workout's ``avg_cadence`` leaves zeros out too, time-weighted over the ride."""
    turning = cadence[cadence > 0]
    return float(turning.mean()) if turning.size else None


def _session(summary: FitSummary, columns, pauses, *, first_s: int, end_s: int, laps: int,
             ride_start: float) -> SessionMessage:
    message = SessionMessage()
    _set(
        message, message_index=0, timestamp=end_s * 1000, start_time=first_s * 1000, event=Event.SESSION,
        event_type=EventType.STOP, sport=SPORTS.get(summary.sport, Sport.GENERIC), first_lap_index=0, num_laps=laps,
        total_elapsed_time=float(end_s - first_s), total_timer_time=_timer_time(first_s, end_s, pauses, base=ride_start),
        total_distance=_distance_between(columns), avg_power=_whole(summary.avg_power),
        max_power=_whole(summary.max_power), normalized_power=_whole(summary.normalized_power),
        avg_heart_rate=_whole(summary.avg_hr), max_heart_rate=_whole(summary.max_hr),
        avg_cadence=_whole(summary.avg_cadence), threshold_power=summary.ftp,
        intensity_factor=summary.intensity_factor, training_stress_score=summary.tss,
        total_work=None if summary.work_kj is None else int(round(summary.work_kj * 1000)),
    )
    return message


def _activity(end_s: int, *, timer_s: float) -> ActivityMessage:
    message = ActivityMessage()
    _set(message, timestamp=end_s * 1000, total_timer_time=timer_s, num_sessions=1, type=Activity.MANUAL,
         event=Event.ACTIVITY, event_type=EventType.STOP)
    return message


def _framed(body: bytes) -> bytes:
    """fit-tool's 14-byte header (with its CRC) before the records, the file's CRC after."""
    header = FitFileHeader(records_size=len(body)).to_bytes()
    crc = crc16(body, crc=crc16(header))
    return header + body + crc.to_bytes(2, "little")
