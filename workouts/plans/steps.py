"""A workout plan's steps: the one schema (the API's body, the stored JSON, the admin's
validation) and the steps resolved to watts for one FTP, with the step at a ride second.

Pure: pydantic and numbers, no Django (the live engine and the archive judge against the
resolved steps through ``workouts.compliance``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from workouts.errors import WorkoutInputError

MAX_STEPS = 500
MAX_STEP_S = 12 * 3600
MAX_PLAN_S = 24 * 3600
MAX_PCT_FTP = 300.0  # a 5 s sprint is rarely above 250% of FTP
MAX_WATTS = 3000
MIN_CADENCE, MAX_CADENCE = 0, 250
STEP_NAME_MAX = 100
PLAN_NAME_MAX = 200

Pct = Annotated[float, Field(ge=0, le=MAX_PCT_FTP, description="% of FTP")]
Watts = Annotated[int, Field(ge=0, le=MAX_WATTS, description="watts")]
Rpm = Annotated[int, Field(ge=MIN_CADENCE, le=MAX_CADENCE, description="revolutions per minute")]


class PlanError(WorkoutInputError):
    """A plan that cannot be stored (bad steps, text or ZWO): 400, the message names the problem."""


def _ordered(pair: tuple, what: str) -> tuple:
    if pair[0] > pair[1]:
        raise ValueError(f"{what} range [{pair[0]}, {pair[1]}]: low is above high")
    return pair


class Target(BaseModel):
    """Exactly one of a power range in % of FTP or in watts, each ``[low, high]``."""

    model_config = ConfigDict(extra="forbid")

    pct_ftp: tuple[Pct, Pct] | None = None
    watts: tuple[Watts, Watts] | None = None

    @model_validator(mode="after")
    def _one_range(self) -> Target:
        if (self.pct_ftp is None) == (self.watts is None):
            raise ValueError('a target is {"pct_ftp": [low, high]} or {"watts": [low, high]}: exactly one of them')
        if self.pct_ftp is not None:
            _ordered(self.pct_ftp, "pct_ftp")
        else:
            _ordered(self.watts, "watts")
        return self

    def describe(self) -> str:
        if self.pct_ftp is not None:
            return f"{_span(self.pct_ftp)}% FTP"
        return f"{_span(self.watts)} W"


class Step(BaseModel):
    """One step: a duration and a power target, optionally a cadence range. Without a name, the
    step is named by what it asks ("8 min at 105% FTP")."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=STEP_NAME_MAX)
    duration_s: int = Field(..., ge=1, le=MAX_STEP_S)
    target: Target
    cadence: tuple[Rpm, Rpm] | None = None

    @field_validator("name")
    @classmethod
    def _no_nul(cls, name: str) -> str:
        if "\x00" in name:
            raise ValueError("a name must not contain NUL characters")
        return name

    @model_validator(mode="after")
    def _named_and_ordered(self) -> Step:
        if self.cadence is not None:
            _ordered(self.cadence, "cadence")
        self.name = self.name.strip() or self.describe()
        return self

    def describe(self) -> str:
        text = f"{_duration(self.duration_s)} at {self.target.describe()}"
        if self.cadence is not None:
            text += f" @{_span(self.cadence)} rpm"
        return text[:STEP_NAME_MAX]

    def stored(self) -> dict:
        """The JSON kept in the database and answered by the API (the contract's form)."""
        out = {"name": self.name, "duration_s": self.duration_s, "target": self.target.model_dump(exclude_none=True, mode="json")}
        if self.cadence is not None:
            out["cadence"] = list(self.cadence)
        return out


_STEPS = TypeAdapter(list[Step])


def _span(pair: Sequence[float]) -> str:
    lo, hi = (f"{v:g}" for v in pair)
    return lo if lo == hi else f"{lo}-{hi}"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    if seconds > 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def check_plan(steps: Sequence[Step]) -> list[Step]:
    """The limits of a whole plan: 1 to MAX_STEPS steps, at most MAX_PLAN_S in all."""
    if not steps:
        raise PlanError("a plan has at least one step")
    if len(steps) > MAX_STEPS:
        raise PlanError(f"a plan has at most {MAX_STEPS} steps (repeats counted out); this one has {len(steps)}")
    total = sum(s.duration_s for s in steps)
    if total > MAX_PLAN_S:
        raise PlanError(f"a plan lasts at most {MAX_PLAN_S // 3600} h; this one lasts {total} s")
    return list(steps)


def steps_from_json(raw: object) -> list[Step]:
    """Stored or posted JSON steps → validated steps; PlanError naming the first problems."""
    try:
        return check_plan(_STEPS.validate_python(raw))
    except ValidationError as exc:
        raise PlanError(describe_errors(exc, prefix="steps")) from None


def describe_errors(exc: ValidationError, *, prefix: str) -> str:
    """pydantic's errors as one line: ``steps.2.target: low is above high; …``."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(p for p in [prefix, *(str(p) for p in err["loc"])] if p)
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def stored_steps(steps: Iterable[Step]) -> list[dict]:
    return [s.stored() for s in steps]


# --- resolved to watts ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolvedStep:
    """A step on the plan's clock: seconds ``start_s`` (inclusive) to ``end_s`` (exclusive)
    from the plan's start, its target in watts (None: a % of FTP target and no FTP known)."""

    index: int
    name: str
    start_s: int
    end_s: int
    target_w: tuple[float, float] | None
    cadence: tuple[int, int] | None

    @property
    def duration_s(self) -> int:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class StepPosition:
    """Where a ride second falls in a plan: the step, seconds into it and left of it."""

    step: ResolvedStep
    elapsed_s: float
    remaining_s: float


def target_watts(target: Mapping, ftp: float | None) -> tuple[float, float] | None:
    """A stored target (``{"pct_ftp": [lo, hi]}`` or ``{"watts": [lo, hi]}``) in watts."""
    if "watts" in target:
        lo, hi = target["watts"]
        return float(lo), float(hi)
    if not ftp:
        return None
    lo, hi = target["pct_ftp"]
    return round(lo * ftp / 100, 1), round(hi * ftp / 100, 1)


def resolved_steps(plan_steps: Sequence[Mapping], ftp: float | None) -> list[ResolvedStep]:
    """A plan's stored steps with cumulative start/end seconds and targets in watts for ``ftp``."""
    out, start = [], 0
    for index, step in enumerate(plan_steps):
        end = start + int(step["duration_s"])
        cadence = step.get("cadence")
        out.append(ResolvedStep(
            index=index, name=step["name"], start_s=start, end_s=end, target_w=target_watts(step["target"], ftp),
            cadence=tuple(cadence) if cadence else None,
        ))
        start = end
    return out


def step_at(resolved: Sequence[ResolvedStep], ride_s: float, *, start_s: float = 0) -> StepPosition | None:
    """The step at ride second ``ride_s`` of a plan that starts at ride second ``start_s``;
    None before the plan starts and once it is over. O(log n): a bisection on the starts."""
    at = ride_s - start_s
    if at < 0 or not resolved or at >= resolved[-1].end_s:
        return None
    step = resolved[bisect.bisect_right(resolved, at, key=lambda s: s.start_s) - 1]
    return StepPosition(step=step, elapsed_s=at - step.start_s, remaining_s=step.end_s - at)


def plan_duration_s(resolved: Sequence[ResolvedStep]) -> int:
    return resolved[-1].end_s if resolved else 0
