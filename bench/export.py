"""FIT and TCX export: CPU time and size of a workout's file, the work an export worker does
(``workout_fit_from_blob`` / ``workout_tcx_from_blob``: the stored blob decoded, then written),
for rides of 1 h, 10 h and the 200,000-sample limit, at 1 Hz with power, heart rate, cadence,
speed, distance and altitude, and 10 laps. Also the read back (``read_fit``) of the FIT file.

    .venv/bin/python bench/export.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from workouts.fit import read_fit  # noqa: E402
from workouts.fit_export import FitSummary, workout_fit_from_blob  # noqa: E402
from workouts.metrics import laps_from_boundaries  # noqa: E402
from workouts.samples import encode, samples_from_arrays  # noqa: E402
from workouts.tcx_export import workout_tcx_from_blob  # noqa: E402

START = dt.datetime(2026, 11, 3, 17, 0, tzinfo=dt.UTC)


def ride(n: int):
    rng = np.random.default_rng(7)
    t = np.arange(n, dtype=float)
    power = np.round(np.where((t // 600) % 2 == 0, 180.0, 260.0) + rng.normal(0, 20, n))
    samples = samples_from_arrays(
        t=t, power=power, heart_rate=np.round(130 + 25 * np.sin(t / 900)), cadence=np.round(88 + rng.normal(0, 3, n)),
        speed=np.full(n, 9.25), distance=9.25 * t, altitude=100 + np.sin(t / 500) * 20,
    )
    laps = laps_from_boundaries(t, power, None, [(n * k / 10, f"lap {k}") for k in range(1, 10)])
    return samples, laps


def cpu_ms(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.process_time()
        out = fn()
        best = min(best, (time.process_time() - started) * 1000)
    return round(best, 1), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    summary = FitSummary(started_at=START, ftp=250, avg_power=220.0, max_power=400, normalized_power=230.0,
                         avg_hr=130.0, max_hr=155, avg_cadence=88.0, work_kj=800.0)
    for n in (3600, 36000, 200_000):
        samples, laps = ride(n)
        blob = encode(samples)
        fit_ms, fit = cpu_ms(lambda: workout_fit_from_blob(blob, summary=summary, laps=laps, pauses=[]), args.repeat)
        tcx_ms, tcx = cpu_ms(lambda: workout_tcx_from_blob(blob, summary=summary, laps=laps, pauses=[]), args.repeat)
        read_ms, back = cpu_ms(lambda: read_fit(fit), args.repeat)
        assert len(back.samples) == n
        print(json.dumps({"samples": n, "fit_cpu_ms": fit_ms, "fit_bytes": len(fit), "tcx_cpu_ms": tcx_ms,
                          "tcx_bytes": len(tcx), "fit_read_cpu_ms": read_ms}))


if __name__ == "__main__":
    main()
