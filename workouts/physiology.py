"""An athlete's physiology in the metrics: training zones and W′ balance. Pure: no Django, no I/O.

One module for the batch metrics (``workouts.metrics.ride_metrics``) and the live engine
(``workouts.metrics.LiveRide``), so the two cannot disagree on a boundary or a step.

Power zones (Coggan, from FTP; a second's power as a share of FTP): Z1 below 55%; Z2 55% to
75% (both included); Z3 over 75% to 90%; Z4 over 90% to 105%; Z5 over 105% to 120%; Z6 over
120% to 150%; Z7 over 150%. Coggan's printed table (<55, 56-75, 76-90, 91-105, 106-120,
121-150, >150) read on a continuous scale: exactly 55% is Z2, 75% is Z2, 75.5% is Z3, 105%
is Z4, 150% is Z6.

Heart-rate zones (from maximum heart rate; each zone includes its lower bound): Z1 below 60%
(below 50% counts as Z1 too), Z2 60% to below 70%, Z3 70% to below 80%, Z4 80% to below 90%,
Z5 90% and over (above 100% counts as Z5).

W′ balance (Skiba's differential form, as written by Froncioni and Clarke; Skiba, Fulford,
Clarke and Skiba, "Intermittent whole-body exercise and the W′bal model", 2015): W′bal starts
full (W′) and, for each second of power P,

- P > CP: W′bal -= (P − CP)·dt (expended at the rate power exceeds CP);
- P ≤ CP: W′bal += (W′ − W′bal)·(CP − P)/W′·dt (recovered in proportion to what is missing
  and to how far below CP the rider is),

capped at W′; it may go below zero (CP or W′ set too low). Time off the bike (a timer pause, a
gap in the recording) is recovery at 0 W: the same step at P = 0 for each second of it,
in closed form (``w_prime_rest``).

Defaults: CP = FTP when the profile has no CP; W′ = 20,000 J when it has none; no CP and no FTP:
no W′ balance (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_W_PRIME_J = 20_000
LOW_W_PRIME_SHARE = 0.25  # "time below 25% of W′"

# Each zone as (its bound, share of FTP / of max heart rate; whether the bound itself is in
# the zone). A value goes to the highest zone whose lower bound it passes; zone 1 has none.
POWER_ZONE_FLOORS = ((0.55, True), (0.75, False), (0.90, False), (1.05, False), (1.20, False), (1.50, False))
HR_ZONE_FLOORS = ((0.60, True), (0.70, True), (0.80, True), (0.90, True))
POWER_ZONES = len(POWER_ZONE_FLOORS) + 1
HR_ZONES = len(HR_ZONE_FLOORS) + 1


def _passes(share, floor: float, inclusive: bool):
    """Whether ``share`` (a float or a numpy array of them) is in the zone that starts at
    ``floor``. Compared in per mille with a tolerance, so 55% of FTP counts as 55% whatever
    the float rounding of value / reference."""
    bound = floor * 1000
    return (share > bound + 1e-9) | (inclusive & (abs(share - bound) <= 1e-9))


def _zone(value: float | None, reference: float | None, floors) -> int | None:
    if not reference or reference <= 0 or value is None or math.isnan(value):
        return None
    share = value * 1000 / reference
    zone = 1
    for floor, inclusive in floors:  # ascending: a value short of one floor is short of the next
        bound = floor * 1000  # ``_passes`` for one float, without numpy-style operators (per sample, live)
        if not (share > bound + 1e-9 or (inclusive and abs(share - bound) <= 1e-9)):
            break
        zone += 1
    return zone


def zones_of(values: np.ndarray, reference: float, floors) -> np.ndarray:
    """``_zone`` of each value of an array (no NaN) at once, the same comparisons."""
    share = values * 1000 / reference
    zones = np.ones(values.shape, dtype=np.int64)
    for floor, inclusive in floors:
        zones += _passes(share, floor, inclusive)
    return zones


def power_zone(watts: float | None, ftp: float | None) -> int | None:
    """Coggan's power zone (1-7) of ``watts``; None without FTP or without power."""
    return _zone(watts, ftp, POWER_ZONE_FLOORS)


def hr_zone(bpm: float | None, max_heart_rate: float | None) -> int | None:
    """Heart-rate zone (1-5) of ``bpm``; None without a maximum heart rate or without HR."""
    return _zone(bpm, max_heart_rate, HR_ZONE_FLOORS)


@dataclass(frozen=True)
class Physiology:
    """What the zones and W′ balance of one ride are computed from (any may be None)."""

    ftp: float | None = None
    critical_power: float | None = None
    w_prime: float | None = None
    max_heart_rate: float | None = None

    def cp_and_w_prime(self) -> tuple[float, float] | None:
        """(CP, W′) with the defaults (CP = FTP, W′ = 20,000 J); None without CP and FTP."""
        cp = self.critical_power or self.ftp
        if not cp:
            return None
        return float(cp), float(self.w_prime or DEFAULT_W_PRIME_J)


def w_prime_step(balance: float, power: float, cp: float, w_prime: float, dt: float = 1.0) -> float:
    """W′bal after ``dt`` seconds at ``power`` (the differential form: module docstring)."""
    if power > cp:
        return balance - (power - cp) * dt
    return min(w_prime, balance + (w_prime - balance) * (cp - power) / w_prime * dt)


def w_prime_rest(balance: float, seconds: float, cp: float, w_prime: float) -> float:
    """W′bal after ``seconds`` off the bike: ``w_prime_step`` at 0 W once per second, in
    closed form (what is missing shrinks by (1 − CP/W′) a second), fractions of a second too."""
    if seconds <= 0:
        return balance
    keep = max(0.0, 1.0 - cp / w_prime)
    return min(w_prime, w_prime - (w_prime - balance) * keep**seconds)


class WPrimeBalance:
    """W′ balance one second at a time, with its minimum and the seconds spent below 25% of
    W′ (ridden seconds only: rest recovers). ``copy()`` lets a snapshot step ahead without
    changing the state."""

    __slots__ = ("cp", "w_prime", "balance", "minimum", "below_s")

    def __init__(self, cp: float, w_prime: float) -> None:
        self.cp, self.w_prime = cp, w_prime
        self.balance = w_prime
        self.minimum: float | None = None
        self.below_s = 0

    def ride(self, power: float) -> None:
        """One second of riding at ``power``."""
        self.balance = w_prime_step(self.balance, power, self.cp, self.w_prime)
        if self.minimum is None or self.balance < self.minimum:
            self.minimum = self.balance
        if self.balance < LOW_W_PRIME_SHARE * self.w_prime:
            self.below_s += 1

    def rest(self, seconds: float) -> None:
        self.balance = w_prime_rest(self.balance, seconds, self.cp, self.w_prime)

    def copy(self) -> "WPrimeBalance":
        other = WPrimeBalance(self.cp, self.w_prime)
        other.balance, other.minimum, other.below_s = self.balance, self.minimum, self.below_s
        return other
