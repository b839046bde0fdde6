"""A dead primary holds up only its own streams (issue 21): the access re-checks' metadata is
read per node under its own timeout, and no listener waits for another's read."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from streams.engine.context import close_redis_context, redis_context
from streams.live.follow import MetaCache
from streams.live.hub import StreamHub
from streams.store import services as store
from streams.store.keys import key_layout
from tests.cluster import owner_of, start_cluster
from tests.helpers import eventually
from tests.streams.sse_client import SSEClient


async def test_a_dead_primary_holds_up_no_other_shard(settings):
    """A primary is killed and no replica takes over (the window before a promotion, made
    long): listeners of the other primaries' streams go on receiving each entry at once while
    the re-checks of every listener, the dead stream's included, keep running. (Before, the
    shared metadata refresh included the dead node's stream and hung for the node map's 5 s
    redirect deadline, and every listener re-checking waited for it.)"""
    cluster = await asyncio.to_thread(start_cluster, full_coverage=False)
    try:
        keys = key_layout(settings.REDIS)

        def on(port: int, prefix: str) -> str:
            return next(n for n in (f"{prefix}-{i}" for i in range(500))
                        if owner_of(cluster, keys.slot(keys.bucket(n))) == port)

        victim, *healthy = cluster.ports
        doomed = on(victim, "doomed")
        alive = [on(port, "alive") for port in healthy]
        await close_redis_context()
        settings.REDIS = replace(settings.REDIS, url=f"redis://127.0.0.1:{healthy[0]}")
        settings.STREAMS_PUBLIC_READ = True
        settings.ACCESS_RECHECK_INTERVAL_MS = 200
        settings.ACCESS_RECHECK_TIMEOUT_MS = 300
        for name in [doomed, *alive]:
            await store.stream_publish(name=name, entries=[{"i": "-1"}])
        clients = {n: await SSEClient(f"/api/streams/{n}/sse").connect() for n in [doomed, *alive]}
        ctx = await redis_context()
        hub, cache = StreamHub.of(ctx), MetaCache.of(ctx)
        async with asyncio.timeout(5):
            for n in clients:
                await hub.reading(n)
        rounds = cache.refreshes
        await eventually(lambda: cache.refreshes >= rounds + 2, what="the metadata refresher ran")

        next(p for p in cluster.procs if str(victim) in p.args).kill()
        lags, i, until = [], 0, time.monotonic() + 7  # longer than the node map's redirect deadline
        while time.monotonic() < until:
            i += 1
            for name in alive:
                sent = time.monotonic()
                await store.stream_publish(name=name, entries=[{"i": str(i)}])
                (event,) = await clients[name].events(1, timeout=5)
                lags.append(time.monotonic() - sent)
                assert event.json()["i"] == str(i)
            await asyncio.sleep(0.05)  # pacing, not a wait for anything
        assert max(lags) < 1.0, f"a healthy shard's entry waited {max(lags):.2f} s"
        assert cache.refreshes >= rounds + 20  # the refresher kept its pace through the outage
        # The dead stream's listener was not ended: its re-checks were postponed, not refused.
        assert not clients[doomed].finished
        for client in clients.values():
            await client.close()
    finally:
        await close_redis_context()
        await asyncio.to_thread(cluster.stop)
