"""Live ride metrics (workouts/rides/tracking.py): what they cost.

1. Per entry: an entry's JSON → sample (EntryReader) → LiveRide.push, and a snapshot, on a
   simulated 1 Hz ride (dropouts, coasting, heart rate, cadence); without a profile, and with
   FTP, CP, W′ and max heart rate (W′ balance and time in zones on: ``engine_physiology``),
   and with a workout plan's compliance and the alerts too (issue 24: ``engine_coaching``).
2. 1,000 followed streams at 1 entry/s each: one process holds a metrics tracker per stream
   (one viewer each) while a separate publisher process adds one entry per stream per second;
   the tracker process's CPU share is measured over the run, next to the same process holding
   plain hub listeners instead (the cost of following alone).
3. ``--placing``: a tracker placing a ride again after late samples (docs/rides.md, "Late
   samples"): one read of the stream and a replay of every sample, wall and CPU per placing.

    REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python bench/live_metrics.py --streams 1000 --duration 30
    REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python bench/live_metrics.py --placing --ride-seconds 10800

Uses its own key prefix on the given database and deletes its keys at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("STREAM_KEY_PREFIX", "benchlm:")
os.environ.setdefault("LIVE_MAX_FOLLOWED_STREAMS", "20000")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import django  # noqa: E402

django.setup()

from streams.store.keys import key_layout  # noqa: E402
from workouts.alerts import AlertWatch  # noqa: E402
from workouts.compliance import Compliance  # noqa: E402
from workouts.metrics import LiveRide  # noqa: E402
from workouts.physiology import Physiology  # noqa: E402
from workouts.rides.archive import EntryReader  # noqa: E402
from workouts.rides.simulate import simulate_ride  # noqa: E402
from workouts.rides.tracking import MetricsBoard  # noqa: E402


def coaching_plan(seconds: int, ftp: int = 250):
    """A plan over the whole ride (simulate_ride's shape, as the demo rides it), resolved to
    watts: the live compliance of issue 24."""
    from workouts.plans.steps import resolved_steps, steps_from_json, stored_steps
    from workouts.rides.demo import demo_plan_steps

    return resolved_steps(stored_steps(steps_from_json(demo_plan_steps(seconds))), ftp)


def per_entry(seconds: int, physiology: Physiology | None = None, *, coaching: bool = False) -> dict:
    """``coaching``: also the plan's compliance and the alerts, one sample at a time, as the
    tracker does it (``MetricsTracker._add``, ``_watch``) and with its snapshot's plan part."""
    ride = simulate_ride(duration=seconds, hz=1, seed=1)
    entries = []
    for k, (t, p, hr, cad) in enumerate(zip(*(ride[c].tolist() for c in ("t", "power", "heart_rate", "cadence")))):
        fields = {"t": str(t), "heart_rate": str(hr), "cadence": str(cad)}
        if not math.isnan(p):
            fields["power"] = str(round(p, 1))
        entries.append((f"{1_700_000_000_000 + k * 1000}-0", json.dumps(fields)))
    engine, reader = LiveRide(physiology=physiology), EntryReader()
    compliance = Compliance(coaching_plan(seconds), tolerance_pct=5) if coaching else None
    alerts = AlertWatch(hr_pct=95) if coaching else None
    max_hr = physiology.max_heart_rate if physiology else None
    started = time.perf_counter()
    for entry_id, data_json in entries:
        s = reader.sample(entry_id, json.loads(data_json))
        engine.push(s["t"], s["power"], s["heart_rate"], s["cadence"])
        if coaching:
            ride_s = s["t"] - engine.first_t
            compliance.push_sample(ride_s, s["power"])
            w_prime = engine.w_prime_now
            hr = s["heart_rate"]
            alerts.update(ride_s, w_prime_balance=w_prime and w_prime[0], w_prime=w_prime and w_prime[1],
                          max_hr=max_hr, plan_state=compliance.state_at(ride_s), heart_rate=None if hr != hr else hr)
    push_us = (time.perf_counter() - started) / len(entries) * 1e6
    started = time.perf_counter()
    for _ in range(1000):
        engine.snapshot(ftp=250)
        if coaching:
            compliance.snapshot(engine.last_t - engine.first_t)
            alerts.active()
    snapshot_us = (time.perf_counter() - started) / 1000 * 1e6
    return {"entries": len(entries), "per_entry_us": round(push_us, 2), "snapshot_us": round(snapshot_us, 2)}


PUBLISHER = r"""
import sys, time, redis
url, n, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
keys = sys.argv[4:]
r = redis.Redis.from_url(url)
start = time.monotonic()
k = 0
while time.monotonic() - start < duration:
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.xadd(key, {"t": str(k), "power": str(200 + k % 50), "heart_rate": "140", "cadence": "90"})
    pipe.execute()
    k += 1
    time.sleep(max(0.0, start + k - time.monotonic()))
print(k)
"""


async def followed(streams: int, duration: float, mode: str) -> dict:
    """CPU share of this process while ``streams`` streams get 1 entry/s each, followed by
    metric trackers (``mode="metrics"``) or by one plain hub listener each (``"listeners"``)."""
    from django.conf import settings

    from streams.engine.context import close_redis_context, redis_context
    from streams.live.follow import Follow, live_batches

    ctx = await redis_context()
    names = [f"lm{i}" for i in range(streams)]
    keys = [key_layout(settings.REDIS).stream(n) for n in names]
    tasks, trackers = [], []
    if mode == "metrics":
        trackers = [MetricsBoard.of(ctx).acquire(n) for n in names]
    else:
        async def listen(name):
            follow = Follow(names=(name,), positions={name: "0-0"}, multi=False)
            async for _ in live_batches(follow, heartbeat=15):
                pass
        tasks = [asyncio.create_task(listen(n)) for n in names]
    await asyncio.sleep(2)  # trackers and readers join
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, settings.REDIS.url, str(streams), str(duration), *keys,
        stdout=subprocess.PIPE,
    )
    await asyncio.sleep(3)  # warm-up
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(duration - 6)
    cpu1, wall1 = time.process_time(), time.monotonic()
    seconds_published = int((await publisher.communicate())[0] or 0)
    samples = [t.ride.samples for t in trackers]
    result = {
        "mode": mode, "streams": streams, "seconds_published": seconds_published,
        "cpu_share": round((cpu1 - cpu0) / (wall1 - wall0), 3),
    }
    if trackers:
        result["min_samples_per_tracker"] = min(samples)
        for t in trackers:
            MetricsBoard.of(ctx).release(t)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    async with ctx.nodes.nodes()[0].main.client() as r:
        for start in range(0, len(keys), 500):
            await r.delete(*keys[start : start + 500])
        await r.delete(*[key_layout(settings.REDIS).stream_keys(n).meta for n in names])
    await close_redis_context()
    return result


async def placing(ride_seconds: int, runs: int = 5) -> dict:
    """What placing late samples costs (docs/rides.md, "Late samples"): a ride of
    ``ride_seconds`` at 1 Hz in a stream, its tracker caught up, then the ride placed again
    (one read of the stream, a replay of every sample), ``runs`` times: wall and CPU ms each."""
    from django.conf import settings

    from streams.engine.context import close_redis_context, redis_context
    from streams.store import services as store

    ctx = await redis_context()
    name = "lm-placing"
    ride = simulate_ride(duration=ride_seconds, hz=1, seed=3)
    entries = [{"t": str(t), "power": str(p), "hr": str(hr), "cadence": str(c)}
               for t, p, hr, c in zip(*(ride[k].tolist() for k in ("t", "power", "heart_rate", "cadence")))
               if not math.isnan(p)]
    for start in range(0, len(entries), 1000):
        await store.stream_publish(name=name, entries=entries[start:start + 1000])
    board = MetricsBoard.of(ctx)
    tracker = board.acquire(name)
    await tracker.ready
    walls, cpus = [], []
    for _ in range(runs):
        tracker._placed_at = float("-inf")
        cpu0, wall0 = time.process_time(), time.monotonic()
        await tracker._place_samples()
        walls.append(round((time.monotonic() - wall0) * 1000, 1))
        cpus.append(round((time.process_time() - cpu0) * 1000, 1))
    samples = tracker.ride.samples
    board.release(tracker)
    async with ctx.nodes.nodes()[0].main.client() as r:
        await r.delete(key_layout(settings.REDIS).stream(name), key_layout(settings.REDIS).stream_keys(name).meta)
    await close_redis_context()
    return {"placing_samples": samples, "wall_ms": walls, "cpu_ms": cpus}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--ride-seconds", type=int, default=14400)
    parser.add_argument("--engine-only", action="store_true", help="the per-entry cost only")
    parser.add_argument("--placing", action="store_true", help="only placing late samples (a replay of the ride)")
    args = parser.parse_args()
    if args.placing:
        print(json.dumps(asyncio.run(placing(args.ride_seconds))))
        return
    print(json.dumps({"engine": per_entry(args.ride_seconds)}))
    body = Physiology(ftp=250, critical_power=260, w_prime=20_000, max_heart_rate=190)
    print(json.dumps({"engine_physiology": per_entry(args.ride_seconds, body)}))
    print(json.dumps({"engine_coaching": per_entry(args.ride_seconds, body, coaching=True)}))
    if args.engine_only:
        return
    for mode in ("listeners", "metrics"):
        print(json.dumps(asyncio.run(followed(args.streams, args.duration, mode))))


if __name__ == "__main__":
    main()
