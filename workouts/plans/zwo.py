"""Zwift's workout files (.zwo, XML) → steps.

Read: ``SteadyState`` (Power, or PowerLow/PowerHigh as a range), ``IntervalsT`` (Repeat,
OnDuration/OffDuration, OnPower/OffPower, Cadence/CadenceResting), and the ramps ``Warmup``,
``Cooldown`` and ``Ramp`` (PowerLow to PowerHigh), each split into steps of at most
``RAMP_SEGMENT_S`` seconds whose target is the ramp's power at the segment's middle (their
average equals the ramp's). Powers are fractions of FTP. ``textevent`` children are skipped.
``FreeRide`` and ``MaxEffort`` have no target: a file with one is refused, naming it.

XML with a DOCTYPE or an entity is refused before parsing (no entity expansion of any kind).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from pydantic import ValidationError

from workouts.plans.steps import STEP_NAME_MAX, PlanError, Step, Target, check_plan, describe_errors

MAX_ZWO = 200_000
RAMP_SEGMENT_S = 60
RAMPS = {"warmup": "warm-up", "cooldown": "cool-down", "ramp": "ramp"}


def plan_from_zwo(text: str) -> tuple[str | None, list[Step]]:
    """The workout's name (None when the file has none) and its steps; PlanError naming the
    problem (the element and its position)."""
    root = _parse(text)
    workout = root.find("workout")
    if workout is None:
        raise PlanError("ZWO: no <workout> element in <workout_file>")
    steps: list[Step] = []
    for position, element in enumerate(workout, start=1):
        where = f"ZWO <{element.tag}> (element {position} of <workout>)"
        try:
            steps += _steps_of(element)
        except (ValueError, KeyError, ValidationError) as exc:
            raise PlanError(f"{where}: {_problem(exc)}") from None
    name = (root.findtext("name") or "").strip() or None
    return name, check_plan(steps)


def _parse(text: str) -> ET.Element:
    if len(text) > MAX_ZWO:
        raise PlanError(f"ZWO: a file is at most {MAX_ZWO} characters")
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise PlanError("ZWO: a DOCTYPE or entity declaration is not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise PlanError(f"ZWO: not well-formed XML: {exc}") from None
    if root.tag != "workout_file":
        raise PlanError(f"ZWO: the root element is <{root.tag}>, not <workout_file>")
    return root


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return describe_errors(exc, prefix="")
    if isinstance(exc, KeyError):
        return f"the attribute {exc.args[0]} is missing"
    return str(exc)


def _steps_of(element: ET.Element) -> list[Step]:
    tag = element.tag.lower()
    cadence = _cadence(element, "Cadence")
    if tag == "steadystate":
        return [_steady(_seconds(element, "Duration"), _power(element), cadence, name="")]
    if tag == "intervalst":
        return _intervals(element, cadence)
    if tag in RAMPS:
        return _ramp(element, RAMPS[tag], cadence)
    if tag in ("freeride", "maxeffort"):
        raise ValueError("has no power target; replace it with a SteadyState (or a step typed as text)")
    raise ValueError("is not a workout element this import reads (SteadyState, IntervalsT, Warmup, Cooldown, Ramp)")


def _number(element: ET.Element, attribute: str) -> float:
    raw = element.attrib[attribute]
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{attribute}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{attribute}={raw!r} is not a finite number")
    return value


def _seconds(element: ET.Element, attribute: str) -> int:
    return max(1, round(_number(element, attribute)))


def _pct(fraction: float) -> float:
    return round(fraction * 100, 1)


def _power(element: ET.Element) -> tuple[float, float]:
    if "Power" in element.attrib:
        pct = _pct(_number(element, "Power"))
        return pct, pct
    return _pct(_number(element, "PowerLow")), _pct(_number(element, "PowerHigh"))


def _cadence(element: ET.Element, attribute: str) -> tuple[int, int] | None:
    if attribute not in element.attrib:
        return None
    rpm = round(_number(element, attribute))
    return rpm, rpm


def _steady(seconds: int, pct: tuple[float, float], cadence, *, name: str) -> Step:
    return Step(name=name, duration_s=seconds, target=Target(pct_ftp=pct), cadence=cadence)


def _intervals(element: ET.Element, cadence) -> list[Step]:
    repeat = round(_number(element, "Repeat")) if "Repeat" in element.attrib else 1
    if not 1 <= repeat <= 100:
        raise ValueError(f"Repeat={repeat}: 1 to 100")
    on_pct, off_pct = _pct(_number(element, "OnPower")), _pct(_number(element, "OffPower"))
    on = _steady(_seconds(element, "OnDuration"), (on_pct, on_pct), cadence, name="")
    off = _steady(_seconds(element, "OffDuration"), (off_pct, off_pct), _cadence(element, "CadenceResting"), name="")
    out = []
    for i in range(1, repeat + 1):
        out.append(on.model_copy(update={"name": f"on: {on.name} ({i}/{repeat})"[:STEP_NAME_MAX]}))
        out.append(off.model_copy(update={"name": f"off: {off.name} ({i}/{repeat})"[:STEP_NAME_MAX]}))
    return out


def _ramp(element: ET.Element, label: str, cadence) -> list[Step]:
    seconds = _seconds(element, "Duration")
    low, high = _number(element, "PowerLow"), _number(element, "PowerHigh")
    count = math.ceil(seconds / RAMP_SEGMENT_S)
    out, start = [], 0
    for i in range(1, count + 1):
        length = min(RAMP_SEGMENT_S, seconds - start)
        middle = (start + length / 2) / seconds
        pct = _pct(low + (high - low) * middle)
        name = f"{label} {_pct(low):g}-{_pct(high):g}% ({i}/{count})"
        out.append(_steady(length, (pct, pct), cadence, name=name))
        start += length
    return out
