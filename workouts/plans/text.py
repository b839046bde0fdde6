"""A plan a coach can type: one step or one repeat a line.

    warm-up: 10m 55%
    4x(on: 8m 105% @95rpm, off: 4m 55%)
    3 x (
      30s 150%
      30s 50%
    )
    cool-down: 10m 120-150w
    # a comment; blank lines are skipped

Grammar (case-insensitive, spaces optional where unambiguous)::

    line     = [name ":"] (step | repeat)
    repeat   = count ("x" | "×") "(" item {"," item} ")"      one line, or "(" ending its line,
                                                              one item a line, ")" on its own line
    item     = [name ":"] step
    step     = duration target [cadence]
    duration = one or more of <n>h <n>m <n>min <n>s <n>sec    10m, 30s, 1h, 1h30m, 8m30s
    target   = <n>% | <lo>-<hi>% | <n>w | <lo>-<hi>w           "% FTP" is read as %
    cadence  = "@" <n> ["-" <n>] ["rpm"]                       @90rpm, @85-95rpm

A step without a name is named by what it asks; the steps of a repeat get " (i/n)". Every
error is a PlanError naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from workouts.plans.steps import STEP_NAME_MAX, PlanError, Step, Target, check_plan, describe_errors

MAX_TEXT = 20_000
MAX_REPEAT = 100

_NAME = re.compile(r"\s*(?P<name>[^:()]*?)\s*:")
_REPEAT_LINE = re.compile(r"\s*(?P<count>\d+)\s*[x×]\s*\((?P<body>.*)\)\s*$", re.I)
_REPEAT_OPEN = re.compile(r"\s*(?P<count>\d+)\s*[x×]\s*\(\s*$", re.I)
_REPEAT_CLOSE = re.compile(r"\s*\)\s*,?\s*$")
_REPEAT_START = re.compile(r"\s*\d+\s*[x×]\s*\(", re.I)
_DURATION = re.compile(r"\s*(?:\d+\s*(?:h|min|m|sec|s)(?![a-z])\s*)+", re.I)
_DURATION_PART = re.compile(r"(\d+)\s*(h|min|m|sec|s)", re.I)
_TARGET = re.compile(
    r"\s*(?P<lo>\d+(?:\.\d+)?)\s*(?:-\s*(?P<hi>\d+(?:\.\d+)?)\s*)?(?P<unit>%(?:\s*ftp(?![a-z]))?|w(?![a-z]))", re.I
)
_CADENCE = re.compile(r"\s*@\s*(?P<lo>\d+)\s*(?:-\s*(?P<hi>\d+)\s*)?(?:rpm(?![a-z]))?", re.I)
_SECONDS = {"h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1}

DURATION_HELP = "a duration like 10m, 30s, 1h or 8m30s"
TARGET_HELP = "a target like 55%, 100-110%, 250w or 240-260w"
CADENCE_HELP = "nothing more, or a cadence like @90rpm or @85-95rpm"


@dataclass(frozen=True)
class _Line:
    number: int
    text: str

    def error(self, problem: str) -> PlanError:
        shown = self.text.strip()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return PlanError(f"line {self.number} ({shown!r}): {problem}")


def steps_from_text(text: str) -> list[Step]:
    """The steps a typed plan describes; PlanError naming the first bad line."""
    if len(text) > MAX_TEXT:
        raise PlanError(f"a plan's text is at most {MAX_TEXT} characters")
    lines = [_Line(n, raw.split("#", 1)[0]) for n, raw in enumerate(text.splitlines(), start=1)]
    lines = [line for line in lines if line.text.strip()]
    steps: list[Step] = []
    at = 0
    while at < len(lines):
        at = _read(lines, at, steps)
    return check_plan(steps)


def _read(lines: list[_Line], at: int, steps: list[Step]) -> int:
    """Steps of the line at ``at`` (and of its block, for a repeat over lines); the next line."""
    line = lines[at]
    name, rest = _split_name(line.text)
    if _REPEAT_CLOSE.match(rest):
        raise line.error("')' closes no repeat")
    if opened := _REPEAT_OPEN.match(rest):
        end = next((i for i in range(at + 1, len(lines)) if _REPEAT_CLOSE.match(lines[i].text)), None)
        if end is None:
            raise line.error("the repeat opened here is not closed by a line with ')'")
        items = [(inner, part) for inner in lines[at + 1 : end] for part in inner.text.split(",") if part.strip()]
        steps += _repeated(line, name, opened["count"], items)
        return end + 1
    if repeat := _REPEAT_LINE.match(rest):
        items = [(line, part) for part in repeat["body"].split(",")]
        steps += _repeated(line, name, repeat["count"], items)
        return at + 1
    if _REPEAT_START.match(rest):
        raise line.error("a repeat ends with ')': 4x(8m 105%, 4m 55%), or '4x(' alone on its line, then a step a line, then ')'")
    steps.append(_step(line, name, rest))
    return at + 1


def _split_name(text: str) -> tuple[str, str]:
    named = _NAME.match(text)
    if named is None:
        return "", text
    return named["name"], text[named.end():]


def _repeated(line: _Line, name: str, count: str, items: list[tuple[_Line, str]]) -> list[Step]:
    times = int(count)
    if not 1 <= times <= MAX_REPEAT:
        raise line.error(f"a repeat is 1 to {MAX_REPEAT} times, not {times}")
    if not items or any(not part.strip() for _, part in items):
        raise line.error("a repeat lists its steps, separated by commas: 4x(8m 105%, 4m 55%)")
    parsed = []
    for item_line, part in items:
        item_name, rest = _split_name(part)
        if _REPEAT_LINE.match(rest) or _REPEAT_OPEN.match(rest):
            raise item_line.error("repeats do not nest")
        parsed.append(_step(item_line, item_name, rest))
    out = []
    for i in range(1, times + 1):
        for step in parsed:
            label = f"{name}: {step.name}" if name else step.name
            out.append(step.model_copy(update={"name": f"{label} ({i}/{times})"[-STEP_NAME_MAX:]}))
    return out


def _step(line: _Line, name: str, text: str) -> Step:
    duration = _DURATION.match(text)
    if duration is None:
        raise line.error(f"expected {DURATION_HELP}")
    seconds = sum(int(n) * _SECONDS[unit.lower()] for n, unit in _DURATION_PART.findall(duration.group()))
    target = _TARGET.match(text, duration.end())
    if target is None:
        raise line.error(f"expected {TARGET_HELP} after the duration")
    cadence = _CADENCE.match(text, target.end())
    end = cadence.end() if cadence else target.end()
    if text[end:].strip():
        raise line.error(f"expected {CADENCE_HELP} after the target, not {text[end:].strip()!r}")
    try:
        return Step(
            name=name, duration_s=seconds, target=_target(line, target),
            cadence=None if cadence is None else (int(cadence["lo"]), int(cadence["hi"] or cadence["lo"])),
        )
    except ValidationError as exc:
        raise line.error(describe_errors(exc, prefix="")) from None


def _target(line: _Line, found: re.Match) -> Target:
    lo = float(found["lo"])
    hi = float(found["hi"]) if found["hi"] else lo
    if found["unit"].startswith("%"):
        return Target(pct_ftp=(lo, hi))
    if lo != int(lo) or hi != int(hi):
        raise line.error("watts are whole numbers")
    return Target(watts=(int(lo), int(hi)))
