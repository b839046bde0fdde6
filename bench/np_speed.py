"""NP speed: workouts.metrics.normalized_power vs the seed's pure-Python sliding window, and
creating a 14,400-sample workout through the API.

    .venv/bin/python bench/np_speed.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from np_seed_baseline import seed_normalized_power  # noqa: E402

from workouts.metrics import normalized_power  # noqa: E402


def best_ms(fn, repeat):
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return round(min(samples), 2), round(statistics.median(samples), 2)


def np_speed(n: int) -> dict:
    rng = np.random.default_rng(1)
    power = rng.uniform(0, 400, n)
    t = np.arange(n, dtype=float)
    as_list = power.tolist()
    ours_best, ours_median = best_ms(lambda: normalized_power(t, power), 50)
    seed_best, seed_median = best_ms(lambda: seed_normalized_power(as_list), 5)
    assert abs(normalized_power(t, power) - seed_normalized_power(as_list)) < 1e-6  # same on gap-free 1 Hz
    return {"bench": "np", "samples": n, "ours_best_ms": ours_best, "ours_median_ms": ours_median,
            "seed_best_ms": seed_best, "seed_median_ms": seed_median, "speedup_best": round(seed_best / ours_best, 1)}


def api_create(n: int = 14400, repeat: int = 10) -> dict:
    import math

    os.environ.update(DJANGO_SETTINGS_MODULE="streamsite.settings", SECRET_KEY="bench", DEBUG="false",
                      ALLOWED_HOSTS="testserver", DATABASE_URL="sqlite:////tmp/streamsite-bench-np.sqlite3")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import asyncio

    from django.contrib.auth import get_user_model
    from django.test import AsyncClient

    from streams.models import ApiToken
    from workouts.models import Workout
    from workouts.rides.simulate import simulate_ride

    user, _ = get_user_model().objects.get_or_create(username="bench")
    token = ApiToken.issue(user=user)[1]
    ride = simulate_ride(duration=n, seed=1)
    body = json.dumps({"title": "bench", "started_at": "2026-11-01T08:00:00Z", "ftp": 250,
                       "samples": {k: [None if math.isnan(x) else x for x in v.tolist()] for k, v in ride.items()}})

    async def run():
        c = AsyncClient()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            resp = await c.post("/api/workouts", body, content_type="application/json",
                                headers={"Authorization": f"Bearer {token}"})
            times.append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 201, resp.content
        return times

    times = asyncio.run(run())
    blob = Workout.objects.order_by("-pk").first().samples_blob
    Workout.objects.filter(athlete=user).delete()
    return {"bench": "api_create_workout", "samples": n, "body_kb": round(len(body) / 1024),
            "stored_kb": round(len(blob) / 1024), "best_ms": round(min(times), 1),
            "median_ms": round(statistics.median(times), 1)}


if __name__ == "__main__":
    for n in (14_400, 1_000_000):
        print(json.dumps(np_speed(n)))
    print(json.dumps(api_create()))
