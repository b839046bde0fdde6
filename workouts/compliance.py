"""Compliance to a planned workout, one second of power at a time (issue 24, item 3).

Pure: no Django, no ORM. The live tracker and the archive feed it the same samples
(``push_sample``: the first sample with power in each whole plan second is that second's), so
the live figures and the archived ones are the same numbers.

Definitions (docs/rides.md, "Planned sessions"):

- The plan's clock is ``plan_s`` = ride second − ``plan_start``. A step covers
  ``[start_s, end_s)``.
- **10 s power**: the mean of the power of the seconds with data in the last 10 s of plan time
  (``plan_s - 9 .. plan_s``); across step boundaries, as a rider's legs do not reset.
- **Classification** of each second with data: ``on`` when the 10 s power is within the step's
  target widened by the tolerance (``lo·(1 − tol)`` to ``hi·(1 + tol)``, ``PLAN_TOLERANCE_PCT``),
  else ``under`` or ``over``.
- **State** (what the coach sees) follows the classification with hysteresis: it changes only
  once a different classification has held for ``hold_s`` consecutive seconds with data (3), so
  a wobble at the edge of the band does not flicker. The first classification of a ride is
  taken at once.
- **Compliance**: the share of a step's seconds *with data* classified ``on`` (a rider who drops
  out is judged on what they rode; the seconds they missed count for nothing either way); the
  session's is the same over every step so far.
- ``pct_of_target``: the 10 s power as a percentage of the middle of the target range.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

WINDOW_S = 10
HOLD_S = 3
TRANSITIONS_KEPT = 1000


class Step(Protocol):
    """A plan step resolved to watts (``workouts.plans.steps.ResolvedStep``); ``target_w``
    None (a % of FTP target without a known FTP) is a step nobody is judged on."""

    name: str
    start_s: float
    end_s: float
    target_w: tuple[float, float] | None


def classify(power: float, lo: float, hi: float, tolerance: float) -> str:
    """``under`` / ``on`` / ``over`` against ``[lo, hi]`` widened by ``tolerance`` (a fraction)."""
    if power < lo * (1 - tolerance):
        return "under"
    if power > hi * (1 + tolerance):
        return "over"
    return "on"


def step_index_at(steps: Sequence[Step], plan_s: float) -> int | None:
    """The index of the step that covers ``plan_s``; None before the plan or after its end."""
    for index, step in enumerate(steps):
        if step.start_s <= plan_s < step.end_s:
            return index
    return None


@dataclass(slots=True)
class _StepTally:
    on: int = 0
    seconds: int = 0

    def share(self) -> float | None:
        return self.on / self.seconds if self.seconds else None


class Compliance:
    """One rider's compliance to one plan. ``push`` each second with data, in order."""

    def __init__(self, steps: Sequence[Step], *, tolerance_pct: float = 5.0, hold_s: int = HOLD_S) -> None:
        self.steps = list(steps)
        self._starts = [step.start_s for step in self.steps]  # ascending: steps follow one another
        self.tolerance = tolerance_pct / 100
        self.hold_s = hold_s
        self.tallies = [_StepTally() for _ in self.steps]
        self.state: str | None = None
        self._pending: tuple[str, int] | None = None  # a different classification, and for how many seconds
        self._window: deque[tuple[int, float]] = deque()
        self._window_sum = 0.0
        self.last_plan_s: int | None = None
        self.transitions: list[tuple[int, str]] = []  # (plan second, new state), the last TRANSITIONS_KEPT

    def push_sample(self, plan_s: float, power: float) -> str | None:
        """A sample at plan time ``plan_s`` (seconds, any rate): the first sample with power of
        each whole plan second is that second's power (as the live chart takes it), so the
        live tracker and the archive, fed the same samples, count the same seconds."""
        second = math.floor(plan_s)
        if math.isnan(power) or (self.last_plan_s is not None and second <= self.last_plan_s):
            return self.state
        return self.push(second, power)

    def step_index(self, plan_s: float) -> int | None:
        """``step_index_at`` of this plan, by bisection (once per sample, live)."""
        index = bisect_right(self._starts, plan_s) - 1
        return index if index >= 0 and plan_s < self.steps[index].end_s else None

    def power_10s(self) -> float | None:
        return self._window_sum / len(self._window) if self._window else None

    def push(self, plan_s: int, power: float) -> str | None:
        """One second of power at plan second ``plan_s`` (an int, increasing); returns the
        state after it (None outside the plan or without a classification yet)."""
        if math.isnan(power):
            return self.state
        self.last_plan_s = plan_s
        self._window.append((plan_s, power))
        self._window_sum += power
        while self._window and self._window[0][0] <= plan_s - WINDOW_S:
            self._window_sum -= self._window.popleft()[1]
        index = self.step_index(plan_s)
        if index is None:
            return self.state
        step = self.steps[index]
        if step.target_w is None:
            return self.state
        seen = classify(self.power_10s(), *step.target_w, self.tolerance)
        tally = self.tallies[index]
        tally.seconds += 1
        tally.on += seen == "on"
        self._follow(seen)
        return self.state

    def _follow(self, seen: str) -> None:
        if self.state is None or seen == self.state:
            if self.state is None:
                self._changed_to(seen)
            self._pending = None
            return
        count = self._pending[1] + 1 if self._pending is not None and self._pending[0] == seen else 1
        if count >= self.hold_s:
            self._changed_to(seen)
            self._pending = None
        else:
            self._pending = (seen, count)

    def _changed_to(self, state: str) -> None:
        self.state = state
        self.transitions.append((self.last_plan_s, state))
        del self.transitions[:-TRANSITIONS_KEPT]

    def state_at(self, plan_s: float) -> str | None:
        """What the alerts read at plan second ``plan_s``: the state within a step that has a
        target, ``finished`` after the last step, None otherwise (before the plan, no data)."""
        if self.steps and plan_s >= self.steps[-1].end_s:
            return "finished"
        index = self.step_index(plan_s)
        if index is None or self.steps[index].target_w is None:
            return None
        return self.state

    def session_compliance(self) -> float | None:
        on = sum(t.on for t in self.tallies)
        seconds = sum(t.seconds for t in self.tallies)
        return on / seconds if seconds else None

    def step_compliances(self) -> list[float | None]:
        return [t.share() for t in self.tallies]

    def snapshot(self, plan_s: float) -> dict:
        """The contract's ``"plan"`` object at plan second ``plan_s`` (ride time now)."""
        index = self.step_index(plan_s)
        session = _rounded(self.session_compliance(), 3)
        if index is None:
            before = bool(self.steps) and plan_s < self.steps[0].start_s
            return {
                "step": None, "step_name": None, "step_elapsed_s": None, "step_remaining_s": None,
                "target_w": None, "pct_of_target": None, "state": None, "step_compliance": None,
                "session_compliance": session, "phase": "before" if before else "finished",
                "starts_in_s": round(self.steps[0].start_s - plan_s) if before else None,
                "steps": len(self.steps),
            }
        step = self.steps[index]
        p10 = self.power_10s()
        middle = sum(step.target_w) / 2 if step.target_w else 0
        fresh = self.last_plan_s is not None and self.last_plan_s > plan_s - WINDOW_S
        return {
            "step": index, "step_name": step.name,
            "step_elapsed_s": round(plan_s - step.start_s), "step_remaining_s": round(step.end_s - plan_s),
            "target_w": [round(w) for w in step.target_w] if step.target_w else None,
            "pct_of_target": _rounded(100 * p10 / middle, 1) if p10 is not None and fresh and middle > 0 else None,
            "state": self.state if fresh and step.target_w else None,
            "step_compliance": _rounded(self.tallies[index].share(), 3),
            "session_compliance": session, "phase": "running", "starts_in_s": None,
            "steps": len(self.steps),
        }

    def summary(self) -> dict:
        """What the archived workout stores as ``plan_compliance``."""
        return {
            "session": _rounded(self.session_compliance(), 3),
            "transitions": [list(t) for t in self.transitions],
            "steps": [
                {"step": i, "name": s.name, "seconds": t.seconds, "on_target_s": t.on, "compliance": _rounded(t.share(), 3)}
                for i, (s, t) in enumerate(zip(self.steps, self.tallies))
            ],
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def plan_compliance(steps: Sequence[Step], t, power, *, start_s: float, tolerance_pct: float) -> dict:
    """The archived ride's compliance (``Compliance.summary``): the samples ``t`` (seconds
    since the ride's first sample) and ``power`` fed as the live tracker feeds them."""
    tracker = Compliance(steps, tolerance_pct=tolerance_pct)
    for ts, pw in zip(t, power):
        tracker.push_sample(float(ts) - start_s, float(pw))
    return tracker.summary()
