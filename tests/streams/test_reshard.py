"""Live delivery while a Redis Cluster moves the slots under followed streams (a reshard):
every listener gets every entry once, in order, and the hub's readers follow their slots."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from streams.engine.context import close_redis_context, redis_context
from streams.live.hub import StreamHub
from streams.store import services as store
from streams.store.keys import key_layout
from tests.cluster import flush_all, move_slot, owner_of
from tests.streams.sse_client import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)

STREAMS = 6
ENTRIES = 240


@pytest.fixture
async def on_cluster(redis_cluster, settings):
    """The app on the local cluster, with public reads (the listeners are anonymous)."""
    await close_redis_context()
    flush_all(redis_cluster)
    settings.REDIS = replace(settings.REDIS, url=redis_cluster.urls[0])
    settings.STREAMS_PUBLIC_READ = True
    settings.ACCESS_RECHECK_INTERVAL_MS = 100  # open follows re-read their metadata while slots move
    try:
        yield redis_cluster
    finally:
        await close_redis_context()
        flush_all(redis_cluster)


async def follow_all(names: list[str]) -> list[SSEClient]:
    """One SSE listener per stream, each followed by the hub before this returns."""
    clients = [await SSEClient(f"/api/streams/{n}/sse").connect() for n in names]
    hub = StreamHub.of(await redis_context())
    async with asyncio.timeout(5):
        for n in names:
            await hub.reading(n)
    return clients


def publish_while(names: list[str], published: dict[str, list[str]], quarter: asyncio.Event) -> asyncio.Task:
    """ENTRIES entries to each stream, one round every 5 ms, ids recorded in ``published``;
    ``quarter`` is set a quarter of the way through."""

    async def publisher() -> None:
        for i in range(ENTRIES):
            for n in names:
                published[n] += await store.stream_publish(name=n, entries=[{"i": str(i)}])
            if i == ENTRIES // 4:
                quarter.set()
            await asyncio.sleep(0.005)

    return asyncio.create_task(publisher())


async def test_a_live_reshard_loses_and_repeats_nothing(on_cluster, settings):
    cluster = on_cluster
    keys = key_layout(settings.REDIS)
    names = [f"reshard-{i}" for i in range(STREAMS)]
    slots = sorted({keys.slot(keys.bucket(n)) for n in names})
    clients = await follow_all(names)
    hub = StreamHub.of(await redis_context())
    published: dict[str, list[str]] = {n: [] for n in names}
    quarter = asyncio.Event()

    def reshard() -> None:  # in a thread: the redis-server side of a reshard, while entries flow
        for slot in slots:
            to = next(p for p in cluster.ports if p != owner_of(cluster, slot))
            move_slot(cluster, slot, to, batch=2, between=lambda: threading.Event().wait(0.01))

    task = publish_while(names, published, quarter)
    await quarter.wait()
    moved_from = {slot: owner_of(cluster, slot) for slot in slots}
    await asyncio.to_thread(reshard)
    await task
    assert all(owner_of(cluster, slot) != moved_from[slot] for slot in slots)  # every slot moved
    try:
        for n, client in zip(names, clients):
            events = await client.events(ENTRIES, timeout=20)
            assert [e.id for e in events] == published[n]  # every entry, once, in order
            assert [e.json()["i"] for e in events] == [str(i) for i in range(ENTRIES)]
        assert hub.stats().rehomes >= 1  # the readers followed their slots
        ctx = await redis_context()
        assert ctx.nodes.redirects >= 1  # and so did the publishes
    finally:
        for client in clients:
            await client.close()


async def test_a_primary_failover_under_followed_streams(on_cluster, settings):
    """A graceful failover (the replica has every acknowledged entry) loses nothing: readers
    blocked on the old primary are told (UNBLOCKED / MOVED or a dropped connection) and follow
    the slot to the new one. (After an unplanned failover, entries the old primary had not yet
    replicated are gone; listeners then simply see the next entries: docs/architecture.md.)"""
    from tests.cluster import add_replica, fail_over

    cluster = on_cluster
    keys = key_layout(settings.REDIS)
    primary = owner_of(cluster, keys.slot(keys.bucket("failover-0")))
    names = [n for n in (f"failover-{i}" for i in range(200)) if owner_of(cluster, keys.slot(keys.bucket(n))) == primary][:3]
    replica = await asyncio.to_thread(add_replica, cluster, primary)
    clients = await follow_all(names)
    hub = StreamHub.of(await redis_context())
    published: dict[str, list[str]] = {n: [] for n in names}
    quarter = asyncio.Event()
    task = publish_while(names, published, quarter)
    await quarter.wait()
    await asyncio.to_thread(fail_over, cluster, replica)
    await task
    assert owner_of(cluster, keys.slot(keys.bucket(names[0]))) == replica
    try:
        for n, client in zip(names, clients):
            events = await client.events(ENTRIES, timeout=20)
            assert [e.id for e in events] == published[n]
        stats = hub.stats()
        assert stats.rehomes + stats.reconnects >= 1
    finally:
        for client in clients:
            await client.close()


async def test_listeners_go_on_after_a_primary_dies(settings):
    """An unplanned failover: a primary is killed (SIGKILL), its replica takes over after the
    cluster's node timeout. Listeners are not stuck: every entry the new primary has reaches
    them once, in order, and entries published after the failover follow. (Entries the dead
    primary acknowledged but had not replicated would be lost by Redis itself; the test WAITs
    for the replica before the kill so that a loaded machine's replication lag does not look
    like a listener's fault.) A cluster of its own: this one loses a node."""
    from redis.exceptions import RedisError

    from tests.cluster import add_replica, start_cluster

    cluster = await asyncio.to_thread(start_cluster)
    try:
        keys = key_layout(settings.REDIS)
        victim = owner_of(cluster, keys.slot(keys.bucket("crash-0")))
        names = [n for n in (f"crash-{i}" for i in range(200))
                 if owner_of(cluster, keys.slot(keys.bucket(n))) == victim][:3]
        replica = await asyncio.to_thread(add_replica, cluster, victim)
        await close_redis_context()
        survivor = next(p for p in cluster.ports if p != victim)
        settings.REDIS = replace(settings.REDIS, url=f"redis://127.0.0.1:{survivor}")
        settings.STREAMS_PUBLIC_READ = True
        clients = [await SSEClient(f"/api/streams/{n}/sse?from=start").connect() for n in names]
        hub = StreamHub.of(await redis_context())
        async with asyncio.timeout(5):
            for n in names:
                await hub.reading(n)
        for i in range(50):
            for n in names:
                await store.stream_publish(name=n, entries=[{"i": str(i)}])
        await asyncio.to_thread(replicated, victim)
        next(p for p in cluster.procs if str(victim) in p.args).kill()

        async def publish_when_served(name: str, i: int) -> None:
            async with asyncio.timeout(30):  # the node timeout (2 s) and an election
                while True:
                    try:
                        await store.stream_publish(name=name, entries=[{"i": str(i)}])
                        return
                    except RedisError:
                        await asyncio.sleep(0.2)

        for i in range(50, 60):
            for n in names:
                await publish_when_served(n, i)
        assert owner_of_via(replica, keys.slot(keys.bucket(names[0]))) == replica
        for n, client in zip(names, clients):
            kept = await store.stream_range(name=n, count=None)  # what the new primary has
            events = await client.events(len(kept), timeout=30)
            assert [e.id for e in events] == [e.id for e in kept]  # once each, in order, none missing
            assert [e.json()["i"] for e in events][-10:] == [str(i) for i in range(50, 60)]
    finally:
        await close_redis_context()
        await asyncio.to_thread(cluster.stop)


def replicated(port: int) -> None:
    """The primary at ``port`` has its writes on its replica (WAIT): what the test's listeners
    got before the kill is then what the new primary has. (An acknowledged write the replica
    never got is lost by Redis itself: docs/configuration.md, PUBLISH_DURABILITY.)"""
    import redis

    with redis.Redis(port=port) as client:
        assert client.wait(1, 10000) == 1, "the replica did not confirm the writes"


def owner_of_via(port: int, slot: int) -> int:
    """The slot's primary as ``port`` sees it (the cluster's first node may be the dead one)."""
    import redis

    with redis.Redis(port=port, decode_responses=True) as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
    raise LookupError(slot)
