"""A realistic synthetic ride: warm-up, intervals, coasting zeros, HR lagging power, cadence,
speed, small dropouts. Deterministic for a seed. Used by ``simulate_ride`` and the tests."""

from __future__ import annotations

import numpy as np


def simulate_ride(*, duration: int = 3600, hz: float = 1.0, ftp: int = 250, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(0, duration, 1.0 / hz)
    target = np.empty(t.size)
    phase = t / max(duration, 1)
    target[:] = 0.75 * ftp  # endurance
    target[phase < 0.15] = 0.55 * ftp + (0.2 * ftp) * (phase[phase < 0.15] / 0.15)  # warm-up ramp
    intervals = (phase >= 0.3) & (phase < 0.7)
    on = ((t - 0.3 * duration) % 480) < 240  # 4 min on / 4 min off
    target[intervals & on] = 1.05 * ftp
    target[intervals & ~on] = 0.5 * ftp
    target[phase >= 0.9] = 0.5 * ftp  # cool-down
    power = np.clip(target + rng.normal(0, 0.06 * ftp, t.size), 0, None)
    coasting = rng.random(t.size) < 0.03
    power[coasting] = 0.0  # real zeros
    # heart rate follows power with a ~40 s lag
    alpha = 1 - np.exp(-1 / (40 * hz))
    hr = np.empty(t.size)
    level = 95.0
    for i, p in enumerate(power):
        level += alpha * ((95 + 80 * p / ftp) - level)
        hr[i] = level
    cadence = np.where(power > 0, np.clip(88 + rng.normal(0, 4, t.size), 60, 120), 0.0)
    speed = np.clip(6 + 4 * power / ftp + rng.normal(0, 0.3, t.size), 0, None)  # m/s
    distance = np.cumsum(speed / hz)
    altitude = 200 + 30 * np.sin(t / 600)
    dropouts = rng.random(t.size) < 0.005  # short power-meter dropouts
    power[dropouts] = np.nan
    return {"t": t, "power": power, "heart_rate": hr.round(), "cadence": cadence.round(),
            "speed": speed.round(2), "distance": distance.round(1), "altitude": altitude.round(1)}
