import asyncio
from dataclasses import replace

from django.conf import settings

from streams.engine.context import build_context, redis_context
from streams.store import services as store
from streams.store.registry import StreamRegistry
from tests.helpers import key, registry_set


async def test_published_stream_is_listed_at_once_and_prefix_pages(r):
    assert (await store.streams_list()).names == []
    for name in ["bike-2", "bike-1", "run-1"]:
        await store.stream_publish(name=name, entries=[{"x": "1"}])
    page = await store.streams_list(prefix="bike")
    assert page.count == 2 and page.names == ["bike-1", "bike-2"]
    page = await store.streams_list(limit=1, offset=1)
    assert page.count == 3 and page.names == ["bike-2"]


async def test_list_does_not_scan(private_r):
    await store.stream_publish(name="a", entries=[{"x": "1"}])
    ctx = await redis_context()
    await StreamRegistry.of(ctx).close()  # no background reconcile during the measurement
    await store.streams_list()  # reads every bucket once
    await private_r.config_resetstat()  # server-wide: hence a Redis of our own
    for _ in range(5):
        await store.streams_list()
    stats = await private_r.info("commandstats")
    assert "cmdstat_scan" not in stats
    assert "cmdstat_smembers" not in stats  # served from the cache: one GET per bucket each


async def test_reconcile_sees_external_xadd_and_del(r):
    ctx = await redis_context()
    await StreamRegistry.of(ctx).close()  # the start-up reconcile would race ours for the counts
    await store.stream_publish(name="ours", entries=[{"x": "1"}])
    await r.xadd(key("external"), {"x": "1"})
    await r.delete(key("ours"))
    assert await StreamRegistry.of(ctx).reconcile() == (1, 1)
    assert (await store.streams_list()).names == ["external"]


async def test_periodic_reconcile_within_one_interval(r, settings):
    settings.REDIS = replace(settings.REDIS, registry_refresh_interval_ms=100)
    assert (await store.streams_list()).names == []
    await r.xadd(key("behind-our-back"), {"x": "1"})
    async with asyncio.timeout(2):  # interval is 100 ms; allow generous slack on a busy box
        while (await store.streams_list()).names != ["behind-our-back"]:
            await asyncio.sleep(0.05)


async def test_other_process_sees_our_publish_at_once(r):
    """A second registry (another process) with a warm cache must still see a new stream."""
    other = build_context(settings.REDIS, cluster=(await redis_context()).nodes.cluster)
    await other.nodes.start()
    try:
        assert await StreamRegistry.of(other).names() == []
        await store.stream_publish(name="new", entries=[{"x": "1"}])
        assert await StreamRegistry.of(other).names() == ["new"]
        await store.streams_delete(names=["new"])
        assert await StreamRegistry.of(other).names() == []
    finally:
        await other.close()


async def test_reconcile_never_unregisters_a_stream_published_during_the_scan(r):
    """SCAN sees the keyspace before our publish; the SET after it. The stream must stay."""
    ctx = await redis_context()
    await StreamRegistry.of(ctx).close()
    from redis.asyncio import (
        Redis,  # the class of the registry's own clients (r may be a cluster client)
    )

    real_scan = Redis.scan_iter
    published = False

    async def scan_then_publish(self, *args, **kwargs):
        nonlocal published
        async for found in real_scan(self, *args, **kwargs):
            yield found
        if not published:
            published = True
            await store.stream_publish(name="fresh", entries=[{"x": "1"}])

    Redis.scan_iter = scan_then_publish
    try:
        await StreamRegistry.of(ctx).reconcile()
    finally:
        Redis.scan_iter = real_scan
    assert published
    assert await r.sismember(registry_set("fresh"), "fresh")
