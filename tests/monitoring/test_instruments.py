import asyncio

import pytest

from streams.core.instruments import OperationTimings, operation_timings, p95, timed


def test_exact_count_min_max_avg_and_p95_window():
    m = OperationTimings(recent=10)
    for ms in [5.0, 1.0, 3.0]:
        m.record("op", ms)
    (s,) = m.snapshot()
    assert (s.count, s.total_ms, s.min_ms, s.max_ms, s.avg_ms) == (3, 9.0, 1.0, 5.0, 3.0)
    assert s.p95_ms == 5.0  # ceil(0.95 * 3) - 1 = 2 → the largest of three
    for ms in range(1, 21):  # 20 more: the window keeps the last 10 (11..20)
        m.record("op", float(ms))
    (s,) = m.snapshot()
    assert s.count == 23 and s.min_ms == 1.0 and s.max_ms == 20.0
    assert s.p95_ms == 20.0  # ceil(9.5) - 1 = 9 → 10th of 11..20
    assert p95(range(1, 101)) == 95  # nearest rank
    assert p95([]) == 0.0


def test_timed_on_sync_async_and_exceptions():
    operation_timings().clear()

    @timed("sync_op")
    def sync_fn(x):
        return x * 2

    @timed("async_op")
    async def async_fn(x):
        await asyncio.sleep(0)
        return x + 1

    @timed("failing_op")
    def failing():
        raise KeyError("boom")

    assert sync_fn(2) == 4
    assert asyncio.run(async_fn(1)) == 2
    with pytest.raises(KeyError):
        failing()
    with timed("block_op"):
        pass

    async def use_async_cm():
        async with timed("async_block"):
            await asyncio.sleep(0)

    asyncio.run(use_async_cm())
    mine = {"sync_op", "async_op", "failing_op", "block_op", "async_block"}
    counts = {s.name: s.count for s in operation_timings().snapshot() if s.name in mine}
    assert counts == dict.fromkeys(mine, 1)


def test_concurrent_recording_from_threads_loses_nothing():
    """Async tasks cannot interleave inside record(); threads can (sync views, admin,
    Prometheus scrapes in worker threads): the lock must keep every call."""
    import sys
    import threading

    m = OperationTimings()
    start = threading.Barrier(8)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def worker():
        start.wait()
        for _ in range(5000):
            m.record("x", 1.0)

    try:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        sys.setswitchinterval(switch)
    (stats,) = m.snapshot()
    assert stats.count == 40000 and stats.total_ms == pytest.approx(40000.0)
