"""Benchmark (b): metadata (length, first id, last id) for N streams.

Compares our ``stream_info_batch`` (one pipelined XINFO STREAM per stream, one round trip)
with the seed plan's 3 commands per stream (XLEN + XRANGE COUNT 1 + XREVRANGE COUNT 1), both
pipelined into one round trip (its best case) and one round trip per stream. Command counts
come from Redis's INFO commandstats. Uses its own Redis database and flushes it.

    .venv/bin/python bench/stream_metadata.py --streams 1000 --repeat 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")
os.environ.setdefault("SECRET_KEY", "bench")

import django  # noqa: E402


async def seed_three_commands_pipelined(r, keys):
    async with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xlen(key)
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrevrange(key, "+", "-", count=1)
        return await pipe.execute()


async def seed_three_commands_per_stream(r, keys):
    out = []
    for key in keys:
        async with r.pipeline(transaction=False) as pipe:
            pipe.xlen(key).xrange(key, "-", "+", count=1).xrevrange(key, "+", "-", count=1)
            out.append(await pipe.execute())
    return out


async def timed(fn, repeat):
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2), "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2)}


async def command_calls(r):
    stats = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}


async def main(args):
    from django.conf import settings

    from streams.engine.context import close_redis_context, redis_context
    from streams.store.services import stream_info_batch

    ctx = await redis_context()
    prefix = ctx.config.stream_key_prefix
    names = [f"meta-{i:05d}" for i in range(args.streams)]
    keys = [prefix + n for n in names]
    async with ctx.main.client() as r:
        await r.flushdb()
        async with r.pipeline(transaction=False) as pipe:
            for key in keys:
                for j in range(10):
                    pipe.xadd(key, {"power": str(j)})
            await pipe.execute()

        runs = {
            "xinfo-batch (ours)": lambda: stream_info_batch(names=names),
            "seed 3 cmds/stream, pipelined": lambda: seed_three_commands_pipelined(r, keys),
            "seed 3 cmds/stream, round trip each": lambda: seed_three_commands_per_stream(r, keys),
        }
        for label, fn in runs.items():
            await fn()  # warm-up
            await r.config_resetstat()
            before = await command_calls(r)
            await fn()
            after = await command_calls(r)
            counts = {k: v - before.get(k, 0) for k, v in after.items() if k != "config|resetstat"}
            counts = {k: v for k, v in counts.items() if v and not k.startswith(("info", "config"))}
            result = await timed(fn, args.repeat)
            print(json.dumps({"run": label, "streams": args.streams, "commands": counts, **result}))
        await r.flushdb()
    await close_redis_context()
    assert settings.REDIS


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=50)
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    django.setup()
    asyncio.run(main(p.parse_args()))
