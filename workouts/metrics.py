"""Training metrics on numpy arrays. Pure functions: no Django, no I/O.

Normalized Power is defined in *seconds* (Coggan): the 30-second rolling mean of 1 Hz power,
each raised to the 4th power, averaged, 4th root. So every metric here first turns the
recording into a 1 Hz series of *moving* time:

1. Moving segments: valid power samples (not NaN) closer than ``GAP_S`` (25 s) belong to one
   segment; a longer gap, or a timer pause (``pauses``: ``(start, end)`` seconds, e.g. from a
   FIT file's timer stop/start events), ends it. Paused time is left out, not filled with zeros.
2. Inside a segment a missing power value is interpolated linearly from its neighbours, and
   each sample's value holds until the next sample (the last one for the interval before it).
3. Each segment is binned into whole seconds from its first sample (mean power per second,
   energy-preserving, so 2 Hz, 1 Hz, 0.5 Hz and jittered timestamps agree); a trailing partial
   second is dropped. Segments are joined: rolling windows run across a pause as if it had not
   happened.

Zeros while moving (coasting) are real power and stay. Windows are full 30 s windows only;
NP is None with less than 30 s of moving power, and flagged low-confidence under 10 minutes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
import numpy as np

METRICS_VERSION = 1
GAP_S = 25.0
WINDOW_S = 30
LOW_CONFIDENCE_S = 600
PEAK_DURATIONS = {"peak_5s": 5, "peak_1min": 60, "peak_5min": 300, "peak_20min": 1200, "peak_60min": 3600}
PROGRESS_EVERY = 1000  # windows, for the streaming form
BLOCK = 1 << 15  # samples per block in the vector passes: the working arrays stay in cache

Pauses = Sequence[tuple[float, float]] | None


@dataclass(frozen=True)
class RideMetrics:
    duration_s: float | None
    moving_time_s: int
    sample_count: int
    avg_power: float | None
    max_power: float | None
    normalized_power: float | None
    np_low_confidence: bool
    intensity_factor: float | None
    tss: float | None
    variability_index: float | None
    work_kj: float | None
    avg_hr: float | None
    max_hr: float | None
    avg_cadence: float | None
    peak_5s: float | None
    peak_1min: float | None
    peak_5min: float | None
    peak_20min: float | None
    peak_60min: float | None
    metrics_version: int = METRICS_VERSION

    def as_dict(self) -> dict:
        return asdict(self)


# --- input -------------------------------------------------------------------------------------
def _as_float_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array")
    return arr


def _check_times(t: np.ndarray) -> None:
    if not np.all(np.isfinite(t)):
        raise ValueError("t must be finite")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("t must be strictly increasing")


def _is_whole_second_grid(t: np.ndarray) -> bool:
    """Every step exactly 1 s. Checked block by block, stopping at the first bad block, so a
    long series never builds a full-size diff array."""
    if t.size < 2:
        return False
    steps = np.empty(min(BLOCK, t.size - 1))
    for start in range(0, t.size - 1, BLOCK):
        m = min(BLOCK, t.size - 1 - start)
        d = np.subtract(t[start + 1 : start + 1 + m], t[start : start + m], out=steps[:m])
        if d.min() != 1.0 or d.max() != 1.0:
            return False
    return True


def _has_nan(values: np.ndarray) -> bool:
    # NaN survives a sum of squares (one BLAS pass; half the time of isnan().any() here);
    # inf stays inf, as with isnan().
    return bool(np.isnan(np.dot(values, values)))


def _in_pause(t: np.ndarray, pauses: Pauses) -> np.ndarray:
    paused = np.zeros(t.shape, dtype=bool)
    for start, end in pauses or ():
        paused |= (t >= start) & (t < end)
    return paused


def _segment_breaks(t: np.ndarray, pauses: Pauses) -> np.ndarray:
    """Boolean per gap between consecutive (unpaused) samples: True where a segment starts.
    A pause between two samples splits them even when they are close in time."""
    breaks = np.diff(t) > GAP_S
    for start, end in pauses or ():
        breaks |= (t[:-1] < end) & (t[1:] >= start)
    return breaks


def _pause_between(a: float, b: float, pauses: Pauses) -> bool:
    return any(a < end and b >= start for start, end in (pauses or ()))


# --- 1 Hz moving series ------------------------------------------------------------------------
def moving_power_1hz(t, power, pauses: Pauses = None) -> np.ndarray:
    """Mean power per second of moving time (see the module docstring)."""
    t = _as_float_array(t, "t")
    p = _as_float_array(power, "power")
    if t.shape != p.shape:
        raise ValueError("t and power must have the same length")
    # Fast path: gap-free 1 Hz with whole-second steps and no missing value is the answer
    # (whole-second steps are increasing, so this also validates t).
    if not pauses and _is_whole_second_grid(t) and not _has_nan(p):
        return p
    steps = np.diff(t)
    if t.size > 1 and not (steps > 0).all():
        raise ValueError("t must be strictly increasing")
    if not np.isfinite(t).all():
        raise ValueError("t must be finite")
    unpaused = ~_in_pause(t, pauses)
    tm, pm = t[unpaused], p[unpaused]  # every sample of moving time, missing power included
    tv = tm[~np.isnan(pm)]
    if tv.size == 0:
        return np.empty(0)
    starts = np.flatnonzero(np.concatenate(([True], _segment_breaks(tv, pauses))))
    ends = np.append(starts[1:], tv.size)
    # A segment runs from its first to its last valid sample; the samples between (missing
    # power included) are one slice of the moving samples.
    lo = np.searchsorted(tm, tv[starts], side="left")
    hi = np.searchsorted(tm, tv[ends - 1], side="right")
    pieces = [_bin_seconds(*_with_interpolated_gaps(tm[a:b], pm[a:b])) for a, b in zip(lo, hi)]
    return np.concatenate(pieces)


def _with_interpolated_gaps(seg_t: np.ndarray, seg_p: np.ndarray):
    """Missing values inside a segment: interpolated from the valid neighbours."""
    missing = np.isnan(seg_p)
    if missing.any():
        seg_p = seg_p.copy()
        seg_p[missing] = np.interp(seg_t[missing], seg_t[~missing], seg_p[~missing])
    return seg_t, seg_p


def _bin_seconds(seg_t: np.ndarray, seg_p: np.ndarray) -> np.ndarray:
    """Zero-order-hold samples → mean per whole second from the segment's first sample."""
    if seg_t.size == 1:
        holds = np.array([1.0])
    else:
        gaps = np.diff(seg_t)
        holds = np.append(gaps, gaps[-1])  # the last sample holds for the interval before it
    edges = np.concatenate(([seg_t[0]], seg_t + holds))
    energy = np.concatenate(([0.0], np.cumsum(seg_p * holds)))
    span = edges[-1] - edges[0]
    n = int(math.floor(span + 1e-9))
    if n <= 0:
        return np.empty(0)
    bounds = edges[0] + np.arange(n + 1, dtype=float)
    return np.diff(np.interp(bounds, edges, energy))


# --- metrics ----------------------------------------------------------------------------------
def _rolling_means(p1: np.ndarray, window: int) -> np.ndarray:
    if p1.size < window:
        return np.empty(0)
    c = np.empty(p1.size + 1)
    c[0] = 0.0
    np.cumsum(p1, out=c[1:])
    means = c[window:] - c[:-window]
    means /= window
    return means


def _window30_sums(x: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Sums of every 30 consecutive values of ``x`` (len(x) - 29 of them), built by the addition
    chain 2, 4, 5, 10, 20, 30: six vector adds, no sequential prefix sum (np.cumsum cannot use
    SIMD and cost half of NP here), and each sum is of 30 values, not a difference of two large
    running totals. ``a``, ``b``, ``c`` are scratch buffers at least len(x) long."""
    m = x.size
    s2 = np.add(x[:-1], x[1:], out=a[: m - 1])
    s4 = np.add(s2[:-2], s2[2:], out=b[: m - 3])
    s5 = np.add(s4[:-1], x[4:], out=s4[:-1])
    s10 = np.add(s5[:-5], s5[5:], out=c[: m - 9])
    s20 = np.add(s10[:-10], s10[10:], out=a[: m - 19])
    return np.add(s20[:-10], s10[20:], out=s20[:-10])


assert WINDOW_S == 30  # _window30_sums is NP's window; the definition does not change


def np_from_1hz(p1: np.ndarray) -> float | None:
    """NP of a 1 Hz series: 30 s rolling means (full windows only), 4th-power mean, 4th root.

    Computed block by block (each block overlapping the next by 29 samples) in reused buffers,
    so a 1,000,000-sample series never builds 8 MB temporaries."""
    n, w = p1.size, WINDOW_S
    if n < w:
        return None
    windows = n - w + 1
    a, b, c = (np.empty(min(BLOCK, windows) + w - 1) for _ in range(3))
    fourth = 0.0
    for start in range(0, windows, BLOCK):
        sums = _window30_sums(p1[start : start + BLOCK + w - 1], a, b, c)
        np.multiply(sums, sums, out=sums)
        fourth += float(np.dot(sums, sums))
    return (fourth / windows) ** 0.25 / w


def normalized_power(t, power, pauses: Pauses = None) -> float | None:
    """Normalized Power in watts, or None with less than 30 s of moving power."""
    return np_from_1hz(moving_power_1hz(t, power, pauses))


def _peak(p1: np.ndarray, seconds: int) -> float | None:
    means = _rolling_means(p1, seconds)
    return float(means.max()) if means.size else None


def _time_weighted_mean(t: np.ndarray, v: np.ndarray, pauses: Pauses, *, skip_zero: bool = False):
    if v.size == 0:
        return None
    holds = np.append(np.diff(t), 1.0) if t.size > 1 else np.array([1.0])
    holds = np.minimum(holds, GAP_S)
    ok = ~np.isnan(v) & ~_in_pause(t, pauses)
    if skip_zero:
        ok &= v > 0
    weight = holds[ok].sum()
    return float((v[ok] * holds[ok]).sum() / weight) if weight > 0 else None


def _nanmax(v: np.ndarray) -> float | None:
    return float(np.nanmax(v)) if v.size and not np.all(np.isnan(v)) else None


def ride_metrics(t, power=None, heart_rate=None, cadence=None, ftp=None, pauses: Pauses = None) -> RideMetrics:
    """Every derived value of a ride. ``t`` in seconds, NaN = missing in every channel."""
    t = _as_float_array(t, "t")
    _check_times(t)
    n = t.size

    def channel(values, name):
        if values is None:
            return np.full(n, np.nan)
        arr = _as_float_array(values, name)
        if arr.shape != t.shape:
            raise ValueError(f"{name} must have as many values as t")
        return arr

    p, hr, cad = channel(power, "power"), channel(heart_rate, "heart_rate"), channel(cadence, "cadence")
    p1 = moving_power_1hz(t, p, pauses)
    moving = int(p1.size)
    np_value = np_from_1hz(p1)
    avg_power = float(p1.mean()) if moving else None
    intensity = np_value / ftp if (np_value is not None and ftp) else None
    tss = moving * np_value * intensity / (ftp * 3600) * 100 if intensity is not None else None
    duration = None
    if n:
        last_hold = t[-1] - t[-2] if n > 1 else 1.0
        duration = float(t[-1] + last_hold - t[0])
    return RideMetrics(
        duration_s=duration,
        moving_time_s=moving,
        sample_count=n,
        avg_power=avg_power,
        max_power=_nanmax(p),
        normalized_power=np_value,
        np_low_confidence=np_value is None or moving < LOW_CONFIDENCE_S,
        intensity_factor=intensity,
        tss=tss,
        variability_index=(np_value / avg_power) if (np_value is not None and avg_power) else None,
        work_kj=float(p1.sum() / 1000) if moving else None,
        avg_hr=_time_weighted_mean(t, hr, pauses),
        max_hr=_nanmax(hr),
        avg_cadence=_time_weighted_mean(t, cad, pauses, skip_zero=True),
        **{name: _peak(p1, seconds) for name, seconds in PEAK_DURATIONS.items()},
    )


# --- streaming form ----------------------------------------------------------------------------
@dataclass(frozen=True)
class NPProgress:
    samples: int  # samples read so far
    windows: int  # full 30 s windows so far
    partial_np: float


def normalized_power_stream(
    samples: Iterable[tuple[float, float | None]], pauses: Pauses = None
) -> Generator[NPProgress, None, float | None]:
    """NP over an iterable of ``(t, power)`` (e.g. a Redis stream read in chunks) in bounded
    memory: yields progress every 1,000 windows and returns the value ``normalized_power``
    gives for the same arrays (equal within float rounding). Same rules, applied one sample
    at a time; only the missing values of one short gap and a 30 s window are held."""
    window: deque[float] = deque()
    window_sum = fourth_sum = 0.0
    windows = seen = 0
    next_report = PROGRESS_EVERY
    binner = _StreamingBinner()

    def feed(seconds: list[float]) -> None:
        nonlocal window_sum, fourth_sum, windows
        for value in seconds:
            window.append(value)
            window_sum += value
            if len(window) > WINDOW_S:
                window_sum -= window.popleft()
            if len(window) == WINDOW_S:
                fourth_sum += (window_sum / WINDOW_S) ** 4
                windows += 1

    for ts, pw, counted in _moving_samples(samples, pauses):
        seen += counted
        feed(binner.close() if math.isnan(ts) else binner.push(ts, pw))
        if windows >= next_report:
            next_report = (windows // PROGRESS_EVERY + 1) * PROGRESS_EVERY
            yield NPProgress(samples=seen, windows=windows, partial_np=(fourth_sum / windows) ** 0.25)
    feed(binner.close())
    return (fourth_sum / windows) ** 0.25 if windows else None


def _moving_samples(samples, pauses) -> Iterator[tuple[float, float, int]]:
    """(t, power, samples consumed) of moving time, missing values interpolated; a segment
    break is yielded as t = NaN."""
    prev: tuple[float, float] | None = None
    pending: list[float] = []  # times of missing values since the last valid sample
    last_t = None
    for ts, pw in samples:
        ts = float(ts)
        if last_t is not None and ts <= last_t:
            raise ValueError("t must be strictly increasing")
        last_t = ts
        if any(start <= ts < end for start, end in (pauses or ())):
            continue
        if pw is None or (isinstance(pw, float) and math.isnan(pw)):
            if prev is not None:
                pending.append(ts)
            continue
        pw = float(pw)
        if prev is not None and (ts - prev[0] > GAP_S or _pause_between(prev[0], ts, pauses)):
            yield (math.nan, math.nan, 0)  # a new segment: pending missing values are dropped
        else:
            for missing_t in pending:
                share = (missing_t - prev[0]) / (ts - prev[0])
                yield (missing_t, prev[1] + share * (pw - prev[1]), 1)
        pending = []
        prev = (ts, pw)
        yield (ts, pw, 1)


class _StreamingBinner:
    """Per-second bins of one segment, emitted as soon as each second is complete."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.origin: float | None = None
        self.prev: tuple[float, float] | None = None
        self.prev_gap: float | None = None
        self.k = 0  # next bin: [origin + k, origin + k + 1)
        self.energy_at_prev = 0.0  # energy from origin to prev[0]
        self.energy_at_bin = 0.0  # energy from origin to origin + k

    def push(self, ts: float, pw: float) -> list[float]:
        if self.prev is None:
            self.origin, self.prev = ts, (ts, pw)
            return []
        out = self._advance(ts)
        self.prev_gap = ts - self.prev[0]
        self.prev = (ts, pw)
        return out

    def close(self) -> list[float]:
        if self.prev is None:
            return []
        hold = self.prev_gap if self.prev_gap is not None else 1.0
        out = self._advance(self.prev[0] + hold)
        self._reset()
        return out

    def _advance(self, until: float) -> list[float]:
        """Extend the previous sample's value to ``until``; emit the seconds completed."""
        a, power = self.prev
        out = []
        while self.origin + self.k + 1 <= until + 1e-9:
            boundary = self.origin + self.k + 1
            energy = self.energy_at_prev + power * (boundary - a)
            out.append(energy - self.energy_at_bin)
            self.energy_at_bin = energy
            self.k += 1
        self.energy_at_prev += power * (until - a)
        return out
