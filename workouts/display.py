"""A workout's numbers as people read them: rounded, with units, under the labels cyclists use
(NP, IF, TSS). The admin and the workout page show the same words."""

from __future__ import annotations

from dataclasses import dataclass

from workouts.physiology import Physiology

DASH = "—"


def duration(seconds: float | None) -> str:
    """h:mm:ss ('1:02:03'), m:ss under an hour ('4:05')."""
    if seconds is None:
        return DASH
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def watts(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f} W"


def bpm(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f} bpm"


def intensity(value: float | None) -> str:
    """IF, two decimals ('0.77')."""
    return DASH if value is None else f"{value:.2f}"


def tss(value: float | None) -> str:
    """TSS, one decimal ('59.2')."""
    return DASH if value is None else f"{value:.1f}"


def kilojoules(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f} kJ"


def joules(value: float | None) -> str:
    """An energy in joules as kJ, one decimal ('17.3 kJ'): W′ and its balance."""
    return DASH if value is None else f"{value / 1000:.1f} kJ"


POWER_ZONE_NAMES = ("Z1 recovery", "Z2 endurance", "Z3 tempo", "Z4 threshold", "Z5 VO2max", "Z6 anaerobic",
                    "Z7 neuromuscular")
POWER_ZONE_RANGES = ("< 55%", "55-75%", "76-90%", "91-105%", "106-120%", "121-150%", "> 150%")
HR_ZONE_RANGES = ("< 60%", "60-70%", "70-80%", "80-90%", "≥ 90%")


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    note: str = ""


def workout_summary(w) -> list[Row]:
    """The summary of a workout page and the admin's change page, in reading order."""
    np_note = "low confidence (under 10 min)" if w.np_low_confidence and w.normalized_power is not None else ""
    return [
        Row("Duration", duration(w.duration_s)),
        Row("Moving time", duration(w.moving_time_s)),
        Row("NP", watts(w.normalized_power), np_note),
        Row("IF", intensity(w.intensity_factor)),
        Row("TSS", tss(w.tss)),
        Row("FTP", watts(w.ftp)),
        Row("Avg power", watts(w.avg_power)),
        Row("Max power", watts(w.max_power)),
        Row("Avg HR", bpm(w.avg_hr)),
        Row("Max HR", bpm(w.max_hr)),
        Row("Work", kilojoules(w.work_kj)),
        *w_prime_rows(w),
    ]


def w_prime_rows(w) -> list[Row]:
    """CP, W′ (the defaults said) and what the ride left of W′."""
    cp_w = Physiology(ftp=w.ftp, critical_power=w.critical_power, w_prime=w.w_prime).cp_and_w_prime()
    if cp_w is None:
        return [Row("W′ balance", DASH, "needs CP or FTP")]
    cp_note = "" if w.critical_power else "FTP (no CP set)"
    w_note = "" if w.w_prime else "default"
    low = DASH if w.w_prime_below_25_s is None else duration(w.w_prime_below_25_s)
    return [
        Row("CP", watts(cp_w[0]), cp_note), Row("W′", joules(cp_w[1]), w_note),
        Row("Min W′ balance", joules(w.min_w_prime_balance)), Row("Below 25% of W′", low),
    ]


def _zone_rows(seconds, labels, ranges, reference: str) -> list[Row]:
    total = sum(seconds or ()) or 1
    return [
        Row(label, duration(s), f"{ranges[k]} of {reference}, {100 * s / total:.0f}%")
        for k, (label, s) in enumerate(zip(labels, seconds))
    ]


def workout_zones(w) -> list[Row]:
    """Time in Coggan's power zones (of FTP) and in heart-rate zones (of max heart rate)."""
    rows = []
    if w.time_in_power_zones is not None:
        rows += _zone_rows(w.time_in_power_zones, POWER_ZONE_NAMES, POWER_ZONE_RANGES, "FTP")
    else:
        rows.append(Row("Power zones", DASH, "need an FTP"))
    if w.time_in_hr_zones is not None:
        rows += _zone_rows(w.time_in_hr_zones, [f"HR Z{k}" for k in range(1, 6)], HR_ZONE_RANGES, "max HR")
    else:
        rows.append(Row("HR zones", DASH, "need a max heart rate"))
    return rows


def workout_peaks(w) -> list[Row]:
    """Best average power over 5 s, 1 min, 5 min and 20 min."""
    return [
        Row("5 s", watts(w.peak_5s)), Row("1 min", watts(w.peak_1min)),
        Row("5 min", watts(w.peak_5min)), Row("20 min", watts(w.peak_20min)),
    ]
