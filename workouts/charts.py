"""A small server-rendered SVG of power and heart rate (admin change page; no JS, no CDN)."""

from __future__ import annotations

import numpy as np
from django.utils.html import format_html, mark_safe

WIDTH, HEIGHT, POINTS = 900, 220, 600


def _polyline(t: np.ndarray, v: np.ndarray, t_max: float, v_max: float, color: str) -> str:
    ok = ~np.isnan(v)
    if not ok.any() or t_max <= 0 or v_max <= 0:
        return ""
    t, v = t[ok], v[ok]
    if t.size > POINTS:  # mean per bucket keeps the shape of a long ride
        edges = np.linspace(0, t.size, POINTS + 1).astype(int)
        t = np.array([t[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
        v = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
    xs = t / t_max * WIDTH
    ys = HEIGHT - np.minimum(v / v_max, 1.0) * (HEIGHT - 10) - 5
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>'


def power_hr_svg(samples) -> str:
    if samples is None:
        return "—"
    t = samples.get("t")
    power = samples.get("power")
    hr = samples.get("heart_rate")
    t_max = float(t[-1]) if t.size else 0.0
    parts = []
    if power is not None:
        parts.append(_polyline(t, power, t_max, max(400.0, float(np.nanmax(power)) if not np.all(np.isnan(power)) else 0), "#e08a00"))
    if hr is not None:
        parts.append(_polyline(t, hr, t_max, 220.0, "#d62246"))
    body = mark_safe("".join(parts))
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" style="max-width:{}px;'
        'background:#fafafa;border:1px solid #ddd">{}</svg>'
        '<div><span style="color:#e08a00">■ power</span> &nbsp; <span style="color:#d62246">■ heart rate</span></div>',
        WIDTH, HEIGHT, WIDTH, body,
    )
