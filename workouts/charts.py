"""A server-rendered SVG of a workout's power and heart rate, with axes a person can read:
power (W) on the left, heart rate (bpm) on the right, ride time (h:mm) at the bottom,
gridlines and a legend. No script, no CDN; the admin's change page and the workout page use it."""

from __future__ import annotations

import math

import numpy as np
from django.utils.html import escape, mark_safe

WIDTH, HEIGHT, POINTS = 900, 280, 600
LEFT, RIGHT, TOP, BOTTOM = 52, 52, 30, 30  # room for the axes' labels and the legend
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
POWER_COLOR, HR_COLOR, GRID_COLOR, TEXT_COLOR = "#c46f00", "#d62246", "#e3e3e3", "#555"
HR_RANGE = (60.0, 200.0)
TIME_STEPS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800)


def ride_clock(seconds: float) -> str:
    """h:mm, the time axis's labels."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}"


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _time_step(t_max: float) -> int:
    return next((s for s in TIME_STEPS_S if t_max / s <= 8), TIME_STEPS_S[-1])


def _downsample(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean per bucket keeps the shape of a long ride in POINTS points."""
    ok = ~np.isnan(v)
    t, v = t[ok], v[ok]
    if t.size > POINTS:
        edges = np.linspace(0, t.size, POINTS + 1).astype(int)
        t = np.array([t[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
        v = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
    return t, v


class Frame:
    """Ride time and the two value ranges → SVG coordinates of the plot area."""

    def __init__(self, t_max: float, power_max: float) -> None:
        self.t_max = max(t_max, 1.0)
        self.power_step = _nice_step(power_max)
        self.power_max = self.power_step * math.ceil(power_max / self.power_step)

    def x(self, t):
        return LEFT + np.asarray(t) / self.t_max * PLOT_W

    def y(self, value, low: float, high: float):
        share = np.clip((np.asarray(value) - low) / (high - low), 0.0, 1.0)
        return TOP + PLOT_H - share * PLOT_H


def _polyline(frame: Frame, t, v, low: float, high: float, color: str) -> str:
    t, v = _downsample(t, v)
    if not t.size:
        return ""
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(frame.x(t), frame.y(v, low, high)))
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" stroke-linejoin="round" points="{points}"/>'


def _text(x: float, y: float, text: str, *, anchor: str = "middle", color: str = TEXT_COLOR) -> str:
    kind = "axis" if color == TEXT_COLOR else "axis-value"
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{color}" class="{kind}">{escape(text)}</text>'


def _power_axis(frame: Frame) -> list[str]:
    parts = [_text(LEFT - 8, TOP - 12, "W", anchor="end", color=POWER_COLOR)]
    for i in range(int(round(frame.power_max / frame.power_step)) + 1):
        watts = i * frame.power_step
        y = float(frame.y(watts, 0.0, frame.power_max))
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID_COLOR}" class="grid"/>')
        parts.append(_text(LEFT - 6, y + 4, f"{watts:g}", anchor="end", color=POWER_COLOR))
    return parts


def _hr_axis(frame: Frame) -> list[str]:
    low, high = HR_RANGE
    parts = [_text(LEFT + PLOT_W + 8, TOP - 12, "bpm", anchor="start", color=HR_COLOR)]
    for bpm in range(int(low), int(high) + 1, 20):
        y = float(frame.y(bpm, low, high))
        parts.append(_text(LEFT + PLOT_W + 6, y + 4, str(bpm), anchor="start", color=HR_COLOR))
    return parts


def _time_axis(frame: Frame) -> list[str]:
    step = _time_step(frame.t_max)
    parts = []
    for t in range(0, int(frame.t_max) + 1, step):
        x = float(frame.x(t))
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + PLOT_H}" stroke="{GRID_COLOR}" class="grid"/>')
        parts.append(_text(x, TOP + PLOT_H + 18, ride_clock(t)))
    return parts


def _legend(has_power: bool, has_hr: bool) -> list[str]:
    parts, x = [], LEFT + 30
    for present, color, label in ((has_power, POWER_COLOR, "power (W)"), (has_hr, HR_COLOR, "heart rate (bpm)")):
        if present:
            parts.append(f'<rect x="{x}" y="{TOP - 21}" width="14" height="3" fill="{color}"/>')
            parts.append(_text(x + 20, TOP - 15, label, anchor="start"))
            x += 150
    return parts


def _has_values(v) -> bool:
    return v is not None and v.size > 0 and not np.all(np.isnan(v))


def power_hr_svg(samples) -> str:
    """The chart as safe HTML (an inline ``<svg>``), or '—' without samples."""
    if samples is None or samples.get("t") is None or samples.get("t").size == 0:
        return "—"
    t, power, hr = samples.get("t"), samples.get("power"), samples.get("heart_rate")
    has_power, has_hr = _has_values(power), _has_values(hr)
    frame = Frame(float(t[-1]), max(400.0, float(np.nanmax(power))) if has_power else 400.0)
    # Classes let a page restyle the chart (the workout page's dark theme); these colors are the admin's.
    parts = [f'<rect class="bg" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>', *_power_axis(frame), *_time_axis(frame)]
    if has_hr:
        parts += _hr_axis(frame)
        parts.append(_polyline(frame, t, hr, *HR_RANGE, HR_COLOR))
    if has_power:
        parts.append(_polyline(frame, t, power, 0.0, frame.power_max, POWER_COLOR))
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" fill="none" stroke="#bbb" class="frame"/>')
    parts += _legend(has_power, has_hr)
    return mark_safe(
        f'<svg class="workout-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" style="max-width:100%;height:auto;font:12px system-ui,sans-serif" role="img" '
        f'aria-label="power and heart rate over ride time">{"".join(parts)}</svg>'
    )
