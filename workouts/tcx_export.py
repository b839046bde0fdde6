"""Workouts → TCX (Garmin's Training Center XML v2), for the services that take TCX and not FIT.

Pure and Django-free like ``workouts/fit_export.py`` (the server runs it in a worker process).
The document is written as text: every value is a number or a fixed word except the title,
escaped with ``xml.sax.saxutils``; ElementTree's writer took ~13 s for a 200,000-sample ride,
this ~1 s. The tests read every file back with an XML parser and a TCX reader (tcxreader).
The file follows FIT export's choices where TCX has a place for them:

- one trackpoint per second of the ride, its first sample (``started_at + t`` to the second);
- power in Garmin's ActivityExtension v2 (``TPX/Watts``, and ``Speed``), heart rate, cadence
  (a run's in ``TPX/RunCadence``), distance and altitude where the workout has them; a value
  missing (NaN), out of what its element holds, or too large to sum (1e15 and up) is left out;
- one ``Lap`` per lap of the workout (markers, a plan's steps), or one for the whole ride, each
  with its timer time (pauses left out), distance, heart rate, cadence, calories, and
  ``LX/AvgWatts`` (the lap's, as the workout computed it) and ``MaxWatts``; a pause ends a
  ``Track`` and the next trackpoint starts another (TCX has no timer events: that is how readers
  see the stop);
- the workout's title as the activity's ``Notes`` (characters XML cannot hold left out).

Calories are the lap's mechanical work in kJ (the workout's ``work_kj`` for a ride of one lap,
else the lap's average power over its moving seconds): 1 kJ of work is ~1 kcal burnt at a
cyclist's ~24% efficiency, the usual rule. A lap without power gets 0 (the element is required).
"""

from __future__ import annotations

import datetime as dt
import re
from xml.sax.saxutils import escape

import numpy as np

from workouts.fit_export import FitSummary, NoSamplesToExport, turning_mean
from workouts.samples import Samples, decode

TCX_NS = "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"
EXT_NS = "http://www.garmin.com/xmlschemas/ActivityExtension/v2"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = (f"{TCX_NS} http://www.garmin.com/xmlschemas/TrainingCenterDatabasev2.xsd "
                   f"{EXT_NS} http://www.garmin.com/xmlschemas/ActivityExtensionv2.xsd")
MEDIA_TYPE = "application/vnd.garmin.tcx+xml"
SPORTS = {"cycling": "Biking", "running": "Running"}
HEART_RATE = (1, 255)  # HeartRateInBeatsPerMinute_t: an unsignedByte from 1
CADENCE = (0, 254)  # CadenceValue_t
WATTS = (0, 65535)  # TPX/Watts: an unsignedShort
CALORIES_MAX = 65535  # Calories: an unsignedShort
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # characters XML 1.0 cannot hold



def attachment(workout_id: int) -> str:
    """The Content-Disposition of a workout's TCX file."""
    return f'attachment; filename="workout-{int(workout_id)}.tcx"'


def workout_tcx_from_blob(blob: bytes, *, summary: FitSummary, laps: list[dict], pauses, title: str = "") -> bytes:
    """``workout_tcx`` of a workout's stored samples (what the server sends a worker)."""
    samples = decode(blob)
    if samples is None:
        raise NoSamplesToExport("the workout has no samples to export")
    return workout_tcx(samples, summary=summary, laps=laps, pauses=pauses, title=title)


def workout_tcx(samples: Samples, *, summary: FitSummary, laps: list[dict], pauses=(), title: str = "") -> bytes:
    """A TCX activity of these samples (``t`` seconds from ``summary.started_at``), laps
    (``workouts.metrics.laps_from_boundaries``'s dicts; none = one lap for the ride) and timer
    pauses (``[[start_s, end_s], …]`` in the samples' time)."""
    if len(samples) == 0:
        raise NoSamplesToExport("the workout has no samples to export")
    ride = _Ride(samples, summary, pauses)
    parts = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<TrainingCenterDatabase xmlns="{TCX_NS}" xmlns:ax="{EXT_NS}" xmlns:xsi="{XSI_NS}" '
        f'xsi:schemaLocation="{SCHEMA_LOCATION}">\n<Activities>\n',
        f'<Activity Sport="{SPORTS.get(summary.sport, "Other")}">\n<Id>{_time(ride.first_s)}</Id>\n',
    ]
    laps = laps or [ride.whole_lap()]
    for k, lap in enumerate(laps):
        parts += ride.lap(lap, last=k == len(laps) - 1)
    if title := NOT_XML.sub("", title):
        parts.append(f"<Notes>{escape(title)}</Notes>\n")
    parts.append("</Activity>\n</Activities>\n</TrainingCenterDatabase>\n")
    return "".join(parts).encode()


class _Ride:
    """The samples at one per second (FIT export's rule), in Unix seconds, with the pauses."""

    def __init__(self, samples: Samples, summary: FitSummary, pauses) -> None:
        self.summary = summary
        self.running = summary.sport == "running"  # cadence: steps (TPX/RunCadence), not the crank's
        start = summary.started_at.timestamp()
        seconds = np.floor(start + samples.get("t")).astype(np.int64)
        rows = np.flatnonzero(np.concatenate(([True], np.diff(seconds) > 0)))
        self.seconds = seconds[rows]
        # Values beyond what a double sums or averages to a finite number count as missing.
        self.columns = {name: _finite(np.asarray(samples.get(name), dtype=float)[rows])
                        for name in ("power", "heart_rate", "cadence", "speed", "distance", "altitude")
                        if samples.get(name) is not None}
        self.first_s = int(self.seconds[0])
        self.end_s = int(self.seconds[-1]) + 1
        self.pauses = [(start + float(a), start + float(b)) for a, b in pauses or ()]
        self.points = self._trackpoints()

    def whole_lap(self) -> dict:
        s = self.summary
        return {"start_s": 0.0, "end_s": float(self.end_s - self.first_s), "avg_power": s.avg_power,
                "avg_hr": s.avg_hr, "work_kj": s.work_kj, "avg_cadence": s.avg_cadence}

    def lap(self, lap: dict, *, last: bool = False) -> list[str]:
        """One ``Lap``: its totals in the schema's order, its tracks, its LX extension. The last
        lap runs to the last trackpoint (a lap's end is the samples' time, not a whole second)."""
        start, end = self.first_s + float(lap["start_s"]), self.first_s + float(lap["end_s"])
        if last:
            end = max(end, float(self.end_s))
        rows = np.flatnonzero((self.seconds >= start) & (self.seconds < end))
        out = [f'<Lap StartTime="{_time(start)}">\n',
               f"<TotalTimeSeconds>{_number(self._timer_time(start, end))}</TotalTimeSeconds>\n",
               f"<DistanceMeters>{_number(self._distance(rows) or 0.0)}</DistanceMeters>\n"]
        if (top_speed := _number_or_none(self._max("speed", rows))) is not None:
            out.append(f"<MaximumSpeed>{top_speed}</MaximumSpeed>\n")
        out.append(f"<Calories>{_calories(lap)}</Calories>\n")
        if (avg_hr := _bounded(lap.get("avg_hr"), HEART_RATE)) is not None:
            out.append(f"<AverageHeartRateBpm><Value>{avg_hr}</Value></AverageHeartRateBpm>\n")
        if (max_hr := _bounded(self._max("heart_rate", rows), HEART_RATE)) is not None:
            out.append(f"<MaximumHeartRateBpm><Value>{max_hr}</Value></MaximumHeartRateBpm>\n")
        out.append("<Intensity>Active</Intensity>\n")
        if not self.running and (cadence := _bounded(self._cadence(lap, rows), CADENCE)) is not None:
            out.append(f"<Cadence>{cadence}</Cadence>\n")
        out.append("<TriggerMethod>Manual</TriggerMethod>\n")
        for track in self._tracks(rows):
            out += ["<Track>\n", *(self.points[i] for i in track), "</Track>\n"]
        out += self._lap_extension(lap, rows)
        out.append("</Lap>\n")
        return out

    def _trackpoints(self) -> list[str]:
        """Every second's ``Trackpoint``, its elements in the schema's order; a value missing
        or out of its element's range is left out."""
        c = self.columns
        n = self.seconds.size
        times = np.datetime_as_string(self.seconds.astype("datetime64[s]"), unit="s").tolist()

        def texts(name, tag, fmt):
            if name not in c:
                return [""] * n
            return ["" if v is None else f"<{tag}>{v}</{tag}>" for v in map(fmt, c[name].tolist())]

        altitude = texts("altitude", "AltitudeMeters", _number_or_none)
        distance = texts("distance", "DistanceMeters", _number_or_none)
        hr = ["" if v is None else f"<HeartRateBpm><Value>{v}</Value></HeartRateBpm>"
              for v in _whole_numbers(c.get("heart_rate"), HEART_RATE, n)]
        cadence = _whole_numbers(c.get("cadence"), CADENCE, n)
        bike = ["" if v is None or self.running else f"<Cadence>{v}</Cadence>" for v in cadence]
        run = ["" if v is None or not self.running else f"<ax:RunCadence>{v}</ax:RunCadence>" for v in cadence]
        speed = texts("speed", "ax:Speed", _number_or_none)
        watts = ["" if v is None else f"<ax:Watts>{v}</ax:Watts>" for v in _whole_numbers(c.get("power"), WATTS, n)]
        return [
            f"<Trackpoint><Time>{times[i]}Z</Time>{altitude[i]}{distance[i]}{hr[i]}{bike[i]}"
            + (f"<Extensions><ax:TPX>{tpx}</ax:TPX></Extensions>" if (tpx := speed[i] + run[i] + watts[i]) else "")
            + "</Trackpoint>\n"
            for i in range(n)
        ]

    def _tracks(self, rows: np.ndarray) -> list[np.ndarray]:
        """The lap's rows, split where a pause falls between two trackpoints."""
        if rows.size == 0:
            return []
        cuts = [int(np.searchsorted(self.seconds[rows], int(np.floor(b)), side="left")) for _a, b in self.pauses]
        cuts = sorted({c for c in cuts if 0 < c < rows.size})
        return np.split(rows, cuts)

    def _lap_extension(self, lap: dict, rows: np.ndarray) -> list[str]:
        """``LX``: average speed, max cadence (a run's average and max), average and max watts
        (the schema's order)."""
        cadence_max = _bounded(self._max("cadence", rows), CADENCE)
        values = [
            ("AvgSpeed", _number_or_none(self._mean("speed", rows))),
            ("MaxBikeCadence", None if self.running else cadence_max),
            ("AvgRunCadence", _bounded(self._cadence(lap, rows), CADENCE) if self.running else None),
            ("MaxRunCadence", cadence_max if self.running else None),
            ("AvgWatts", _bounded(lap.get("avg_power"), WATTS)),
            ("MaxWatts", _bounded(self._max("power", rows), WATTS)),
        ]
        values = "".join(f"<ax:{tag}>{value}</ax:{tag}>" for tag, value in values if value is not None)
        return [f"<Extensions><ax:LX>{values}</ax:LX></Extensions>\n"] if values else []

    def _timer_time(self, a: float, b: float) -> float:
        paused = sum(max(0.0, min(b, pe) - max(a, ps)) for ps, pe in self.pauses)
        return max(0.0, (b - a) - paused)

    def _present(self, name: str, rows: np.ndarray) -> np.ndarray | None:
        if name not in self.columns:
            return None
        values = self.columns[name][rows]
        values = values[~np.isnan(values)]
        return values if values.size else None

    def _max(self, name: str, rows: np.ndarray) -> float | None:
        values = self._present(name, rows)
        return None if values is None else float(values.max())

    def _mean(self, name: str, rows: np.ndarray) -> float | None:
        values = self._present(name, rows)
        return None if values is None else float(values.mean())

    def _cadence(self, lap: dict, rows: np.ndarray) -> float | None:
        """The lap's average cadence: the workout's for the whole-ride lap (as in the FIT file),
        else its records' without zeros (``turning_mean``)."""
        if "avg_cadence" in lap:
            return lap["avg_cadence"]
        values = self._present("cadence", rows)
        return None if values is None else turning_mean(values)

    def _distance(self, rows: np.ndarray) -> float | None:
        values = self._present("distance", rows)
        return None if values is None else float(values.max() - values.min())


def _calories(lap: dict) -> int:
    """The lap's mechanical work in kJ as kcal: the workout's work for a ride of one lap, else
    the lap's average power over its moving seconds (pauses and gaps left out, as the workout's
    work); 0 without power."""
    work_kj = lap.get("work_kj")
    if work_kj is None and lap.get("avg_power") is not None and lap.get("moving_s") is not None:
        work_kj = lap["avg_power"] * lap["moving_s"] / 1000
    if work_kj is None or not np.isfinite(work_kj):
        return 0
    return int(min(max(round(work_kj), 0), CALORIES_MAX))


def _finite(values: np.ndarray) -> np.ndarray:
    """NaN where a value is so large that a sum or a mean of a few would not be finite."""
    return np.where(np.abs(values) < 1e15, values, np.nan)


def _time(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(int(np.floor(unix_s)), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float) -> str:
    """A double as the schema takes it, to the centimetre or centisecond (no float noise)."""
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def _number_or_none(value: float | None) -> str | None:
    return None if value is None or not np.isfinite(value) else _number(value)  # NaN: missing


def _whole_numbers(values: np.ndarray | None, bounds: tuple[int, int], n: int) -> list[int | None]:
    """``_bounded`` of a whole column, vectorised."""
    if values is None:
        return [None] * n
    whole = np.rint(values)
    keep = ~np.isnan(whole) & (whole >= bounds[0]) & (whole <= bounds[1])
    return [int(v) if k else None for v, k in zip(whole.tolist(), keep.tolist())]


def _bounded(value, bounds: tuple[int, int]) -> int | None:
    """A whole number within its element's range, or None (left out)."""
    if value is None or np.isnan(value):
        return None
    whole = int(round(float(value)))
    return whole if bounds[0] <= whole <= bounds[1] else None
