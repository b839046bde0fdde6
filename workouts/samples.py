"""Columnar telemetry: validation and compact storage (one compressed .npz blob per workout)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from workouts.errors import WorkoutInputError

CHANNELS = ("t", "power", "heart_rate", "cadence", "speed", "distance", "altitude")
MAX_SAMPLES = 200_000  # per API request
MAX_STORED_SAMPLES = 2_000_000  # archives of long streams, FIT files
NON_NEGATIVE = ("power", "heart_rate", "cadence", "speed", "distance")


class SamplesError(WorkoutInputError):
    """Samples that cannot be stored; the message names the channel and index."""


@dataclass
class Samples:
    """One float64 array per channel, equal lengths; NaN = missing. ``t`` is required."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.arrays["t"].size)

    def get(self, channel: str) -> np.ndarray | None:
        return self.arrays.get(channel)

    def to_lists(self) -> dict[str, list]:
        """JSON-ready: NaN becomes null."""
        return {
            name: [None if math.isnan(v) else v for v in arr.tolist()] for name, arr in self.arrays.items()
        }


def samples_from_columns(columns: object) -> Samples:
    """Validate ``{"t": [...], "power": [...], ...}`` (``None`` = missing) into arrays."""
    if not isinstance(columns, dict):
        raise SamplesError("samples must be an object of columnar arrays")
    unknown = set(columns) - set(CHANNELS)
    if unknown:
        raise SamplesError(f"unknown sample channels: {', '.join(sorted(unknown))} (known: {', '.join(CHANNELS)})")
    if "t" not in columns:
        raise SamplesError("samples.t (seconds from the start) is required")
    lengths = {name: len(v) if isinstance(v, list) else -1 for name, v in columns.items()}
    for name, n in lengths.items():
        if n < 0:
            raise SamplesError(f"samples.{name} must be an array")
    n = lengths["t"]
    if n == 0:
        raise SamplesError("samples.t is empty")
    if n > MAX_SAMPLES:
        raise SamplesError(f"{n} samples is more than the limit of {MAX_SAMPLES}")
    for name, length in lengths.items():
        if length != n:
            raise SamplesError(f"samples.{name} has {length} values but samples.t has {n}")
    arrays = {name: _channel(name, values) for name, values in columns.items()}
    t = arrays["t"]
    if np.isnan(t).any():
        raise SamplesError(f"samples.t[{int(np.flatnonzero(np.isnan(t))[0])}] is missing: every sample needs a time")
    steps = np.diff(t)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise SamplesError(f"samples.t must increase: t[{i}]={t[i]} is not after t[{i - 1}]={t[i - 1]}")
    return Samples(arrays)


NUMBER_TYPES = frozenset({int, float, type(None)})


def _channel(name: str, values: list) -> np.ndarray:
    """One JSON array → float64, ``None`` → NaN. Vectorised when every value is a plain
    number or null (numpy turns ``None`` into NaN); anything else — or a NaN/inf literal, a
    negative value where none is allowed, an int too large for a float — goes through the
    per-value loop, which names the first bad index."""
    if set(map(type, values)) <= NUMBER_TYPES:
        try:
            out = np.array(values, dtype=float)
        except OverflowError:
            return _channel_checked(name, values)
        missing = np.isnan(out)
        if (
            int(missing.sum()) == values.count(None)  # no NaN literal hiding among the nulls
            and np.isfinite(out[~missing]).all()
            and not (name in NON_NEGATIVE and (out < 0).any())
        ):
            return out
    return _channel_checked(name, values)


def _channel_checked(name: str, values: list) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v is None:
            out[i] = np.nan
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SamplesError(f"samples.{name}[{i}]={v!r} is not a number")
        try:
            finite = math.isfinite(v)
        except OverflowError:
            raise SamplesError(f"samples.{name}[{i}] is too large for a number") from None
        if not finite:
            raise SamplesError(f"samples.{name}[{i}]={v} is not finite (use null for a missing value)")
        if v < 0 and name in NON_NEGATIVE:
            raise SamplesError(f"samples.{name}[{i}]={v} is negative")
        out[i] = v
    return out  # e.g. numpy scalars from Python callers: valid, only not plain JSON types


def samples_from_arrays(max_samples: int = MAX_STORED_SAMPLES, **arrays) -> Samples:
    """Arrays from our own readers (FIT import, stream archive): the same checks, vectorised.
    A channel with no value at all is left out."""
    out = {}
    n = None
    for name, values in arrays.items():
        if values is None:
            continue
        arr = np.asarray(values, dtype=float)
        if name != "t" and np.isnan(arr).all():
            continue
        n = arr.size if n is None else n
        if arr.size != n:
            raise SamplesError(f"samples.{name} has {arr.size} values, expected {n}")
        bad = ~np.isnan(arr) & ~np.isfinite(arr)
        if name in NON_NEGATIVE:
            bad |= arr < 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SamplesError(f"samples.{name}[{i}]={arr[i]} is not a valid value")
        out[name] = arr
    if "t" not in out or not out["t"].size:
        raise SamplesError("no samples")
    if out["t"].size > max_samples:
        raise SamplesError(f"{out['t'].size} samples is more than the limit of {max_samples}")
    if (np.diff(out["t"]) <= 0).any():
        raise SamplesError("sample times must increase")
    return Samples(out)


def encode(samples: Samples) -> bytes:
    """Compressed .npz: float64 time, float32 elsewhere (~2-4 bytes a value after zlib)."""
    buf = io.BytesIO()
    arrays = {k: (v if k == "t" else v.astype(np.float32)) for k, v in samples.arrays.items()}
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode(blob: bytes | memoryview | None) -> Samples | None:
    if not blob:
        return None
    with np.load(io.BytesIO(bytes(blob)), allow_pickle=False) as data:
        return Samples({k: data[k].astype(float) for k in data.files})
