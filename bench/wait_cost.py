"""Micro-benchmark: what a listener's wait costs per delivery, and the objects it holds.

10,000 subscriptions each wait as the live path does (``waiter`` + ``take``, a heartbeat
deadline 15 s away) while 30 rounds of one entry per subscription are pushed; prints
microseconds per delivery and the garbage-collector-tracked objects per waiting listener.
Also runs on older trees (``next_batch`` with a timeout, before the hub's clock, or with a
deadline), for before/after figures.

    .venv/bin/python bench/wait_cost.py
"""

import asyncio
import gc
import inspect
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings_test")
import django  # noqa: E402

django.setup()
from streams.live.hub import Subscription  # noqa: E402

N, ROUNDS = 10000, 30



async def main():
    direct = hasattr(Subscription, "take")
    new = direct or "deadline" in inspect.signature(Subscription.next_batch).parameters
    subs = [Subscription(("s",), 1000) for _ in range(N)]
    got = [0]
    async def listen(sub):
        while True:
            if direct:
                waiter = sub.waiter(time.monotonic() + 15)
                if waiter is not None:
                    await waiter
                b = sub.take()
            else:
                b = await sub.next_batch(time.monotonic() + 15 if new else 15)
            got[0] += len(b)
    tasks = [asyncio.create_task(listen(s)) for s in subs]
    await asyncio.sleep(0.1)
    gc.collect()
    objs = len(gc.get_objects())
    t0 = time.perf_counter()
    for r in range(ROUNDS):
        for s in subs:
            s.push(("e", r))
        while got[0] < N * (r + 1):
            await asyncio.sleep(0)
    dt = time.perf_counter() - t0
    print(f"{'clock' if new else 'timeout'}: {dt / (N * ROUNDS) * 1e6:.2f} us per delivery, {objs / N:.1f} gc objects per waiting listener")
    for t in tasks:
        t.cancel()


asyncio.run(main())
