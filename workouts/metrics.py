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

Zones and W′ balance (workouts/physiology.py) use the same moving 1 Hz series: time in power
zones counts its seconds; W′ balance steps through them one by one, and the time between two
segments (a pause, a gap over ``GAP_S``: the next segment's first sample minus the last whole
second of the one before) is rest at 0 W. Time in heart-rate zones uses the heart rate's time
weights (as its average does).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from workouts.physiology import (
    HR_ZONE_FLOORS, HR_ZONES, POWER_ZONE_FLOORS, POWER_ZONES, Physiology, WPrimeBalance, hr_zone, power_zone,
    zones_of,
)

METRICS_VERSION = 2  # 2: W′ balance and time in zones
GAP_S = 25.0
WINDOW_S = 30
LOW_CONFIDENCE_S = 600
PEAK_DURATIONS = {"peak_5s": 5, "peak_1min": 60, "peak_5min": 300, "peak_20min": 1200, "peak_60min": 3600}
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
    min_w_prime_balance: float | None = None
    w_prime_below_25_s: int | None = None
    time_in_power_zones: list[int] | None = None
    time_in_hr_zones: list[float] | None = None
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
    return joined(moving_segments_1hz(t, power, pauses))


def joined(segments: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """The seconds of every segment, in one series."""
    if len(segments) == 1:
        return segments[0][1]
    return np.concatenate([p1 for _origin, p1 in segments]) if segments else np.empty(0)


def moving_power_1hz_timed(t, power, pauses: Pauses = None) -> tuple[np.ndarray, np.ndarray]:
    """``moving_power_1hz`` and the time each of its seconds starts at (each segment's seconds
    count from its first sample): what laps cut the ride's one 1 Hz series by."""
    segments = moving_segments_1hz(t, power, pauses)
    if not segments:
        return np.empty(0), np.empty(0)
    times = [origin + np.arange(p1.size, dtype=float) for origin, p1 in segments]
    return np.concatenate(times), joined(segments)


def moving_segments_1hz(t, power, pauses: Pauses = None) -> list[tuple[float, np.ndarray]]:
    """``moving_power_1hz`` segment by segment: (the time of the segment's first sample, its
    seconds)."""
    t = _as_float_array(t, "t")
    p = _as_float_array(power, "power")
    if t.shape != p.shape:
        raise ValueError("t and power must have the same length")
    # Fast path: gap-free 1 Hz with whole-second steps and no missing value is the answer
    # (whole-second steps are increasing, so this also validates t).
    if not pauses and _is_whole_second_grid(t) and not _has_nan(p):
        return [(float(t[0]), p)]
    steps = np.diff(t)
    if t.size > 1 and not (steps > 0).all():
        raise ValueError("t must be strictly increasing")
    if not np.isfinite(t).all():
        raise ValueError("t must be finite")
    unpaused = ~_in_pause(t, pauses)
    tm, pm = t[unpaused], p[unpaused]  # every sample of moving time, missing power included
    tv = tm[~np.isnan(pm)]
    if tv.size == 0:
        return []
    starts = np.flatnonzero(np.concatenate(([True], _segment_breaks(tv, pauses))))
    ends = np.append(starts[1:], tv.size)
    # A segment runs from its first to its last valid sample; the samples between (missing
    # power included) are one slice of the moving samples.
    lo = np.searchsorted(tm, tv[starts], side="left")
    hi = np.searchsorted(tm, tv[ends - 1], side="right")
    return [(float(tm[a]), _bin_seconds(*_with_interpolated_gaps(tm[a:b], pm[a:b]))) for a, b in zip(lo, hi)]


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


def _holds(t: np.ndarray) -> np.ndarray:
    """Each sample's time weight: the time to the next sample, at most GAP_S; 1 s for the last."""
    holds = np.append(np.diff(t), 1.0) if t.size > 1 else np.array([1.0])
    return np.minimum(holds, GAP_S)


def _time_weighted_mean(t: np.ndarray, v: np.ndarray, pauses: Pauses, *, skip_zero: bool = False):
    if v.size == 0:
        return None
    holds = _holds(t)
    ok = ~np.isnan(v) & ~_in_pause(t, pauses)
    if skip_zero:
        ok &= v > 0
    weight = holds[ok].sum()
    return float((v[ok] * holds[ok]).sum() / weight) if weight > 0 else None


def _nanmax(v: np.ndarray) -> float | None:
    return float(np.nanmax(v)) if v.size and not np.all(np.isnan(v)) else None


def w_prime_balance_1hz(segments: list[tuple[float, np.ndarray]], cp: float, w_prime: float,
                        *, track: WPrimeBalance | None = None) -> np.ndarray:
    """W′ balance at the end of each moving second (``moving_segments_1hz``'s segments), with
    the rest at 0 W between segments (module docstring). ``track`` (a fresh one by default)
    is stepped through them: its minimum and time below 25% are the ride's."""
    track = track or WPrimeBalance(cp, w_prime)
    out = np.empty(sum(p1.size for _origin, p1 in segments))
    k, end = 0, None
    for origin, p1 in segments:
        if end is not None:
            track.rest(origin - end)
        for value in p1.tolist():
            track.ride(value)
            out[k] = track.balance
            k += 1
        end = origin + p1.size
    return out


def _physiology_metrics(segments, p1: np.ndarray, t: np.ndarray, hr: np.ndarray, pauses: Pauses,
                        body: Physiology) -> dict:
    """W′ balance (minimum, seconds below 25%) and time in zones; None where the profile
    lacks what they need (CP or FTP; FTP; max heart rate)."""
    out: dict = {"min_w_prime_balance": None, "w_prime_below_25_s": None, "time_in_power_zones": None,
                 "time_in_hr_zones": None}
    if (cp_w := body.cp_and_w_prime()) is not None:
        track = WPrimeBalance(*cp_w)
        w_prime_balance_1hz(segments, *cp_w, track=track)
        out["min_w_prime_balance"], out["w_prime_below_25_s"] = track.minimum, track.below_s
    if body.ftp:
        zones = zones_of(p1, body.ftp, POWER_ZONE_FLOORS)
        out["time_in_power_zones"] = np.bincount(zones, minlength=POWER_ZONES + 1)[1:].tolist()
    if body.max_heart_rate:
        holds = _holds(t)
        ok = ~np.isnan(hr) & ~_in_pause(t, pauses)
        zones = zones_of(hr[ok], body.max_heart_rate, HR_ZONE_FLOORS)
        out["time_in_hr_zones"] = np.bincount(zones, weights=holds[ok], minlength=HR_ZONES + 1)[1:].tolist()
    return out


def ride_metrics(t, power=None, heart_rate=None, cadence=None, ftp=None, pauses: Pauses = None, *,
                 critical_power=None, w_prime=None, max_heart_rate=None) -> RideMetrics:
    """Every derived value of a ride. ``t`` in seconds, NaN = missing in every channel.
    ``critical_power``, ``w_prime`` and ``max_heart_rate`` (and ``ftp``) give the W′ balance and
    the zones (workouts/physiology.py)."""
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
    segments = moving_segments_1hz(t, p, pauses)
    p1 = joined(segments)
    moving = int(p1.size)
    np_value = np_from_1hz(p1)
    avg_power = float(p1.mean()) if moving else None
    intensity, tss = intensity_and_tss(np_value, moving, ftp)
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
        **_physiology_metrics(segments, p1, t, hr, pauses, Physiology(
            ftp=ftp, critical_power=critical_power, w_prime=w_prime, max_heart_rate=max_heart_rate)),
    )


def intensity_and_tss(np_value: float | None, moving_s: int, ftp: float | None) -> tuple[float | None, float | None]:
    """IF = NP / FTP; TSS = moving hours × IF² × 100 (= s × NP × IF / (FTP × 3600) × 100)."""
    if np_value is None or not ftp:
        return None, None
    intensity = np_value / ftp
    return intensity, moving_s * np_value * intensity / (ftp * 3600) * 100


def with_ftp(metrics: dict, ftp: float | None) -> dict:
    """``metrics`` (a ``RideMetrics.as_dict()``) with IF and TSS for another FTP: the only
    values that depend on it."""
    intensity, tss = intensity_and_tss(metrics["normalized_power"], metrics["moving_time_s"], ftp)
    return {**metrics, "intensity_factor": intensity, "tss": tss}


# --- laps ----------------------------------------------------------------------------------------
def laps_from_boundaries(t, power=None, heart_rate=None, boundaries=(), pauses: Pauses = None) -> list[dict]:
    """The laps a ride splits into at ``boundaries``, a list of ``(start_s, label)`` in ride
    seconds (seconds from the first sample): markers, and later a plan's steps. Without
    boundaries there are no laps. The first lap starts at 0 (label None unless a boundary is
    at 0), each boundary starts the next, the last ends with the ride (``duration_s`` of
    ``ride_metrics``); empty laps (two boundaries at one second, one at or past the end) are
    left out. Per lap: ``avg_power`` and ``np`` from the seconds of the ride's one moving 1 Hz
    series that start in the lap (``moving_power_1hz_timed``), NP from the lap's own full 30 s
    windows (None under 30 moving seconds: the workout's rule), ``avg_hr`` time-weighted with
    the ride's weights (None without heart rate), ``moving_s`` the lap's moving seconds."""
    t = _as_float_array(t, "t")
    _check_times(t)
    if t.size == 0 or not boundaries:
        return []
    p = np.full(t.size, np.nan) if power is None else _as_float_array(power, "power")
    hr = np.full(t.size, np.nan) if heart_rate is None else _as_float_array(heart_rate, "heart_rate")
    if p.shape != t.shape or hr.shape != t.shape:
        raise ValueError("power and heart_rate must have as many values as t")
    seconds_at, p1 = moving_power_1hz_timed(t, p, pauses)
    ride_s = t - t[0]
    weights = _hr_weights(t, hr, pauses)
    end = float(t[-1] + (t[-1] - t[-2] if t.size > 1 else 1.0) - t[0])
    starts = sorted(((min(max(float(s), 0.0), end), label) for s, label in boundaries), key=lambda b: b[0])
    edges = [(0.0, None), *starts]
    laps = []
    for k, (start, label) in enumerate(edges):
        stop = edges[k + 1][0] if k + 1 < len(edges) else end
        if stop <= start:
            continue
        lap_p1 = p1[(seconds_at >= t[0] + start) & (seconds_at < t[0] + stop)]
        in_lap = (ride_s >= start) & (ride_s < stop)
        laps.append({
            "start_s": start, "end_s": stop, "duration_s": stop - start, "moving_s": int(lap_p1.size),
            "avg_power": float(lap_p1.mean()) if lap_p1.size else None, "np": np_from_1hz(lap_p1),
            "avg_hr": _weighted_mean(hr[in_lap], weights[in_lap]), "label": label,
        })
    return laps


def _hr_weights(t: np.ndarray, hr: np.ndarray, pauses: Pauses) -> np.ndarray:
    """Each sample's weight in ``_time_weighted_mean`` (0 where it does not count)."""
    holds = np.append(np.diff(t), 1.0) if t.size > 1 else np.array([1.0])
    holds = np.minimum(holds, GAP_S)
    return np.where(~np.isnan(hr) & ~_in_pause(t, pauses), holds, 0.0)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float | None:
    total = weights.sum()
    return float((np.nan_to_num(values) * weights).sum() / total) if total > 0 else None


# --- live form ----------------------------------------------------------------------------------
class LiveRide:
    """``ride_metrics`` one sample at a time, for a ride still being recorded (a live stream):
    constant work per sample and bounded memory (a 30 s window, the missing values of one
    short gap). ``snapshot()`` gives what ``ride_metrics`` gives for every sample pushed so far
    (equal within float rounding): the same moving 1 Hz series, the same NP windows, the same
    time weights. Samples must come in strictly increasing ``t``.

    ``physiology`` (FTP, CP, W′, max heart rate) is what the W′ balance and the time in zones
    are stepped with, as each second completes: ``set_physiology`` changes it from then on
    (the seconds already counted stay as they were)."""

    def __init__(self, pauses: Pauses = None, physiology: Physiology | None = None) -> None:
        self.pauses = pauses
        self.physiology = Physiology()
        self._w_prime: WPrimeBalance | None = None
        self._power_zones: list[int] | None = None
        self._hr_zones = _ZoneTimes()
        self.samples = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.last_gap: float | None = None
        self.power = self.heart_rate = self.cadence = math.nan  # the latest values
        self._valid: tuple[float, float] | None = None  # last (t, power) with a power value
        self._missing: list[float] = []  # times of missing power since that one
        self._binner = _StreamingBinner()
        self._window: deque[float] = deque(maxlen=WINDOW_S)  # the last 30 moving seconds
        self._fourth_sum = 0.0
        self._windows = 0
        self._moving = 0
        self._energy = 0.0
        self._hr = _TimeWeighted()
        self._cadence = _TimeWeighted(skip_zero=True)
        self._max_power = -math.inf
        self._segment_end: float | None = None  # the last whole second of the segment before
        self.set_physiology(physiology or Physiology())

    def set_physiology(self, physiology: Physiology) -> None:
        """The FTP, CP, W′ and max heart rate for the seconds from now on. A new CP or W′ keeps
        the balance's share of W′ (a full W′ stays full); none makes it None."""
        if physiology == self.physiology and (self._w_prime is not None or physiology.cp_and_w_prime() is None):
            return
        self.physiology = physiology
        cp_w = physiology.cp_and_w_prime()
        old = self._w_prime
        if cp_w is None:
            self._w_prime = None
        elif old is None or (old.cp, old.w_prime) != cp_w:
            track = WPrimeBalance(*cp_w)
            if old is not None:
                track.balance = old.balance / old.w_prime * track.w_prime
                track.minimum, track.below_s = old.minimum, old.below_s
            self._w_prime = track
        if physiology.ftp and self._power_zones is None:
            self._power_zones = [0] * POWER_ZONES
        self._hr_zones.max_heart_rate = physiology.max_heart_rate

    @property
    def w_prime_now(self) -> tuple[float, float] | None:
        """(W′ balance over the seconds completed so far, W′), None without CP and W′: what
        the live alerts read after each sample (the snapshot also counts the held seconds)."""
        return None if self._w_prime is None else (self._w_prime.balance, self._w_prime.w_prime)

    def push(self, t: float, power: float = math.nan, heart_rate: float = math.nan, cadence: float = math.nan) -> None:
        """One sample; NaN = missing in any channel."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError("t must be finite")
        if self.last_t is not None and t <= self.last_t:
            raise ValueError("t must be strictly increasing")
        if self.last_t is not None:
            self.last_gap = t - self.last_t
            weight = min(self.last_gap, GAP_S)
            self._hr.close(weight)
            self._hr_zones.close(weight)
            self._cadence.close(weight)
        else:
            self.first_t = t
        self.last_t = t
        self.samples += 1
        self.power, self.heart_rate, self.cadence = power, heart_rate, cadence
        paused = any(start <= t < end for start, end in (self.pauses or ()))
        self._hr_zones.open(heart_rate, paused)
        self._hr.open(heart_rate, paused)
        self._cadence.open(cadence, paused)
        if not math.isnan(power):
            self._max_power = max(self._max_power, power)
        if not paused:
            self._power_sample(t, power)

    def _power_sample(self, t: float, power: float) -> None:
        """Moving samples → 1 Hz seconds (module docstring, steps 1-3)."""
        if math.isnan(power):
            # Interpolated only if the next power value comes within GAP_S of the last one
            # (else a new segment starts and these are dropped): at most GAP_S of them held.
            if self._valid is not None and t - self._valid[0] <= GAP_S:
                self._missing.append(t)
            return
        prev = self._valid
        if prev is not None and (t - prev[0] > GAP_S or _pause_between(prev[0], t, self.pauses)):
            self._feed(self._binner.close())  # a new segment; its missing values are dropped
            self._segment_end = self._binner.closed_at
        elif prev is not None:
            for missing_t in self._missing:
                share = (missing_t - prev[0]) / (t - prev[0])
                self._feed(self._binner.push(missing_t, prev[1] + share * (power - prev[1])))
        self._missing.clear()
        if self._segment_end is not None:  # the first sample of a new segment: rest before it
            if self._w_prime is not None:
                self._w_prime.rest(t - self._segment_end)
            self._segment_end = None
        self._valid = (t, power)
        self._feed(self._binner.push(t, power))

    def _feed(self, seconds: list[float]) -> None:
        _ride_seconds(seconds, self._w_prime, self._power_zones, self.physiology.ftp)
        fourth, windows = _fold_windows(self._window, seconds)
        self._fourth_sum += fourth
        self._windows += windows
        self._moving += len(seconds)
        self._energy += sum(seconds)

    def snapshot(self, ftp: float | None = None) -> dict:
        """The metrics of the ride so far. The seconds the last sample still holds are counted
        as if the ride ended now (as ``ride_metrics`` does); nothing here changes the state."""
        tail = self._binner.peek_close()
        window = deque(self._window, maxlen=WINDOW_S)  # a copy: the tail is folded in here only
        fourth, added = _fold_windows(window, tail)
        fourth_sum, windows = self._fourth_sum + fourth, self._windows + added
        window = list(window)
        moving = self._moving + len(tail)
        np_value = (fourth_sum / windows) ** 0.25 if windows else None
        intensity, tss = intensity_and_tss(np_value, moving, ftp)
        duration = None
        if self.samples:
            duration = self.last_t + (self.last_gap if self.last_gap is not None else 1.0) - self.first_t

        def mean_of_last(seconds: int) -> float | None:
            return sum(window[-seconds:]) / seconds if len(window) >= seconds else None

        w_prime = self._w_prime.copy() if self._w_prime is not None else None
        power_zones = list(self._power_zones) if self._power_zones is not None else None
        _ride_seconds(tail, w_prime, power_zones, self.physiology.ftp)
        power_3s = mean_of_last(3)

        return {
            "elapsed_s": duration,
            "moving_s": moving,
            "samples": self.samples,
            "avg_power": (self._energy + sum(tail)) / moving if moving else None,
            "max_power": self._max_power if self._max_power > -math.inf else None,
            "normalized_power": np_value,
            "np_low_confidence": np_value is None or moving < LOW_CONFIDENCE_S,
            "intensity_factor": intensity,
            "tss": tss,
            "power_3s": power_3s,
            "power_30s": mean_of_last(WINDOW_S),
            "power": or_none(self.power),
            "heart_rate": or_none(self.heart_rate),
            "avg_heart_rate": self._hr.mean(),
            "cadence": or_none(self.cadence),
            "avg_cadence": self._cadence.mean(),
            "w_prime_balance": w_prime.balance if w_prime is not None else None,
            "min_w_prime_balance": w_prime.minimum if w_prime is not None else None,
            "w_prime_below_25_s": w_prime.below_s if w_prime is not None else None,
            "power_zone": power_zone(power_3s, ftp or self.physiology.ftp),
            "hr_zone": hr_zone(or_none(self.heart_rate), self.physiology.max_heart_rate),
            "time_in_power_zones": power_zones,
            "time_in_hr_zones": self._hr_zones.times(),
        }


def _ride_seconds(seconds: list[float], w_prime: WPrimeBalance | None, power_zones: list[int] | None,
                  ftp: float | None) -> None:
    """Completed moving seconds into the W′ balance and the time in power zones."""
    for value in seconds:
        if w_prime is not None:
            w_prime.ride(value)
        if power_zones is not None and ftp:
            power_zones[power_zone(value, ftp) - 1] += 1


def _fold_windows(window: deque, seconds: list[float]) -> tuple[float, int]:
    """Append 1 Hz values to ``window`` (the last 30 s, a maxlen deque): the sum of the 4th
    powers of every full window's mean this adds, and how many full windows it adds."""
    fourth, windows = 0.0, 0
    for value in seconds:
        window.append(value)
        if len(window) == WINDOW_S:
            fourth += (sum(window) / WINDOW_S) ** 4
            windows += 1
    return fourth, windows


def or_none(value: float) -> float | None:
    """NaN (missing) as None."""
    return None if math.isnan(value) else value


class _TimeWeighted:
    """``_time_weighted_mean`` one sample at a time: a sample's weight (the time to the next
    sample, at most GAP_S; 1 s for the last one) is known when the next sample comes."""

    def __init__(self, *, skip_zero: bool = False) -> None:
        self.skip_zero = skip_zero
        self.total = self.weight = 0.0
        self.open_value: float | None = None

    def open(self, value: float, paused: bool) -> None:
        counted = not paused and not math.isnan(value) and not (self.skip_zero and value <= 0)
        self.open_value = value if counted else None

    def close(self, weight: float) -> None:
        if self.open_value is not None:
            self.total += self.open_value * weight
            self.weight += weight
        self.open_value = None

    def mean(self) -> float | None:
        total, weight = self.total, self.weight
        if self.open_value is not None:
            total, weight = total + self.open_value, weight + 1.0
        return total / weight if weight > 0 else None


class _ZoneTimes:
    """Time in heart-rate zones with ``_TimeWeighted``'s weights: a sample's zone is known when
    it comes, its weight when the next one does."""

    def __init__(self) -> None:
        self.max_heart_rate: float | None = None
        self.seconds: list[float] | None = None
        self.open_zone: int | None = None

    def open(self, value: float, paused: bool) -> None:
        self.open_zone = None if paused else hr_zone(value, self.max_heart_rate)
        if self.open_zone is not None and self.seconds is None:
            self.seconds = [0.0] * HR_ZONES

    def close(self, weight: float) -> None:
        if self.open_zone is not None:
            self.seconds[self.open_zone - 1] += weight
        self.open_zone = None

    def times(self) -> list[float] | None:
        if self.max_heart_rate is None and self.seconds is None:
            return None
        times = list(self.seconds or [0.0] * HR_ZONES)
        if self.open_zone is not None:
            times[self.open_zone - 1] += 1.0
        return times


class _StreamingBinner:
    """Per-second bins of one segment, emitted as soon as each second is complete."""

    def __init__(self) -> None:
        self.closed_at: float | None = None
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
        self.closed_at = self.origin + self.k  # the end of the segment's last whole second
        self._reset()
        return out

    def peek_close(self) -> list[float]:
        """What ``close()`` would emit now, without closing."""
        if self.prev is None:
            return []
        saved = (self.k, self.energy_at_prev, self.energy_at_bin)
        hold = self.prev_gap if self.prev_gap is not None else 1.0
        out = self._advance(self.prev[0] + hold)
        self.k, self.energy_at_prev, self.energy_at_bin = saved
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
