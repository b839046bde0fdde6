"""Scale checks for the workout commands: archive a 1,000,000-entry stream, and recompute
10,000 workouts, each timed with its peak RSS (in a child process).

    .venv/bin/python bench/workouts_scale.py --entries 1000000 --workouts 10000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
DB = "/tmp/streamsite-scale.sqlite3"


def run(cmd: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "manage.py", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return {"command": " ".join(cmd), "seconds": round(seconds, 1), "peak_rss_mb_so_far": round(peak_mb), "out": proc.stdout.strip()[-200:]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--workouts", type=int, default=10_000)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = p.parse_args()
    if os.path.exists(DB):
        os.remove(DB)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "streamsite.settings", "SECRET_KEY": "bench", "DEBUG": "false",
           "DATABASE_URL": f"sqlite:///{DB}", "REDIS_URL": args.redis_url, "STREAM_MAXLEN": "0", "LOG_LEVEL": "warning"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "shell", "-c",
                    "from django.contrib.auth import get_user_model; get_user_model().objects.create_user('bench')"],
                   cwd=ROOT, env=env, check=True)
    r = redis.Redis.from_url(args.redis_url)
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    for i in range(args.entries):
        pipe.xadd("stream:long", {"t": str(i), "power": str(150 + i % 150), "heart_rate": "140", "cadence": "90"})
        if i % 10000 == 9999:
            pipe.execute()
    pipe.execute()
    results = [run(["archive_stream", "long", "--athlete", "bench", "--delete"], env)]
    # 10,000 workouts: clones of one 1-hour ride (samples blob copied), then recompute all.
    subprocess.run([sys.executable, "manage.py", "shell", "-c", f"""
import datetime as dt
from django.contrib.auth import get_user_model
from workouts.models import Workout
from workouts.services import workout_create
from workouts.samples import samples_from_arrays
from workouts.rides.simulate import simulate_ride
u = get_user_model().objects.get(username='bench')
ride = simulate_ride(duration=3600, seed=1)
w = workout_create(athlete=u, title='seed', started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), samples=samples_from_arrays(**ride))
rows = [Workout(athlete=u, title=f'w{{i}}', started_at=w.started_at, samples_blob=w.samples_blob) for i in range({args.workouts})]
Workout.objects.bulk_create(rows, batch_size=500)
"""], cwd=ROOT, env=env, check=True)
    results.append(run(["recompute_metrics", "--all"], env))
    r.flushdb()
    for line in results:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
