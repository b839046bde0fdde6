"""The ride janitor (workouts/rides/janitor.py): what one scan of every stream costs.

The janitor reads every stream's info (``stream_info_batch``, 500 streams a round trip) and
judges each ride's state once per ``scan_interval()`` (``RIDE_IDLE_END``/4, at most 30 s).
Two registries of ``--streams`` owned streams are timed:

1. every ride live (an entry just written): nothing to do but read and judge;
2. every ride ended and archived (``workout_id`` recorded): the steady state of a day of rides
   with ``RIDE_ARCHIVED_STREAM=keep``, each still read at every scan.

    REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python bench/ride_janitor.py --streams 10000

Reports wall time and this process's CPU time per scan, and the share of a core at the default
30 s interval. Uses its own key prefix on the given database and deletes its keys at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("STREAM_KEY_PREFIX", "benchjan:")
os.environ.setdefault("STREAMS_MAX_PER_USER", "1000000")
os.environ.setdefault("PUBLISH_RATE_PER_TOKEN", "10000000")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import django  # noqa: E402

django.setup()

from streams.access.identity import Actor  # noqa: E402
from streams.engine.context import close_redis_context, redis_context  # noqa: E402
from streams.store import services as store  # noqa: E402
from workouts.rides.janitor import MAX_SCAN_INTERVAL_S, RideJanitor  # noqa: E402

OWNER = Actor(user_id=1, username="bench")


async def scan_costs(janitor: RideJanitor, names: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` scans of ``names``."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        await janitor._look(names)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return sorted(walls)[runs // 2], sorted(cpus)[runs // 2]


async def in_batches(calls, size: int = 10) -> None:
    for start in range(0, len(calls), size):
        await asyncio.gather(*(call() for call in calls[start : start + size]))


async def delete_all(names: list[str]) -> None:
    for start in range(0, len(names), 1000):
        await store.streams_delete(names=names[start : start + 1000], actor=Actor(manager=True))


async def main(args) -> None:
    ctx = await redis_context()
    names = [f"ride-{i:06d}" for i in range(args.streams)]
    await delete_all(names)  # what a run stopped midway left
    try:
        await in_batches([lambda n=n: store.stream_publish(name=n, entries=[{"power": "200"}], actor=OWNER)
                          for n in names])
        janitor = RideJanitor(ctx)
        rows = [("every ride live", *await scan_costs(janitor, names, args.runs))]
        await in_batches([lambda n=n: store.stream_end(name=n, actor=OWNER) for n in names])
        await in_batches([lambda n=n: store.stream_archived_as(name=n, workout_id=1) for n in names])
        rows.append(("every ride ended and archived", *await scan_costs(janitor, names, args.runs)))
        assert janitor.archived == 0, "the bench's rides must not be archived again"
        print(f"{args.streams} streams, median of {args.runs} scans")
        print("| registry | wall per scan | CPU per scan | CPU per stream | share of a core every 30 s |")
        print("|---|---|---|---|---|")
        for what, wall, cpu in rows:
            print(f"| {what} | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms | {cpu / args.streams * 1e6:.1f} µs"
                  f" | {cpu / MAX_SCAN_INTERVAL_S:.2%} |")
    finally:
        await delete_all(names)
        await close_redis_context()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
