import asyncio
import uuid

import pytest
from django.conf import settings

from streams.engine.pool import (
    BlockingReadPool,
    ClientPool,
    PoolClosedError,
    PoolExhaustedError,
    PoolLimits,
)
from tests.conftest import kill, node_local, our_connections
from tests.helpers import eventually


def limits(**kw) -> PoolLimits:
    base = dict(min=0, max=2, acquire_timeout_ms=200, idle_timeout_ms=60000, health_check_interval_ms=60000)
    base.update(kw)
    return PoolLimits(**base)


@pytest.fixture
async def make_pool(r):
    pools = []

    def make(cls=ClientPool, name=None, **kw):
        # A name of this test's own (connections are named streamsite:<pool>:<pid>): a
        # connection another test of this process left open cannot be counted as this pool's.
        pool = cls(settings.REDIS.url, limits(**kw), name=name or f"test-{uuid.uuid4().hex[:8]}")
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def test_start_opens_min_connections(r, make_pool):
    pool = make_pool(min=3, max=5)
    await pool.start()
    assert pool.stats().total == 3
    assert pool.stats().available == 3
    assert len(await our_connections(r, pool.name)) == 3


async def test_grows_to_max_and_times_out_when_exhausted(r, make_pool):
    pool = make_pool(min=0, max=2, acquire_timeout_ms=100)
    a = await pool.acquire()
    b = await pool.acquire()
    assert pool.stats().in_use == 2
    with pytest.raises(PoolExhaustedError, match="exhausted"):
        await pool.acquire()
    assert pool.stats().waiting == 0
    pool.release(a)
    c = await pool.acquire()
    assert c is a  # recovered: the released client is lent again
    pool.release(b)
    pool.release(c)
    assert pool.stats().total == 2
    assert len(await our_connections(r, pool.name)) == 2


async def test_waiters_are_served_in_fifo_order(r, make_pool):
    pool = make_pool(max=1, acquire_timeout_ms=5000)
    held = await pool.acquire()
    order: list[int] = []

    async def borrower(i: int):
        async with pool.client():
            order.append(i)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(borrower(i)))
        await eventually(lambda: pool.stats().waiting >= i + 1, interval=0)
    pool.release(held)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_cancelled_borrower_returns_its_client(r, make_pool):
    pool = make_pool(max=1, acquire_timeout_ms=2000)
    started = asyncio.Event()

    async def blocked_read():
        async with pool.client() as client:
            started.set()
            await client.blpop([node_local("nothing-here")], timeout=3)

    task = asyncio.create_task(blocked_read())
    await started.wait()
    async def blocked_in_redis():  # wait until Redis has the command: cancel mid-command
        return any(c["cmd"] == "blpop" for c in await our_connections(r, pool.name))

    await eventually(blocked_in_redis)
    assert pool.stats().in_use == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.stats().in_use == 0
    async with pool.client() as client:  # usable again (reconnects)
        assert await client.ping()


async def test_cancelled_waiter_leaves_the_queue(r, make_pool):
    pool = make_pool(max=1, acquire_timeout_ms=5000)
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await eventually(lambda: pool.stats().waiting > 0, interval=0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.stats().waiting == 0
    pool.release(held)
    assert pool.stats() .available == 1


async def test_idle_clients_above_min_are_reaped(r, make_pool):
    pool = make_pool(min=1, max=4, idle_timeout_ms=1)
    clients = [await pool.acquire() for _ in range(4)]
    for c in clients:
        pool.release(c)
    await asyncio.sleep(0.01)  # let the 1 ms idle timeout pass: this *is* the behaviour under test
    assert pool.reap_idle() == 3
    assert pool.stats().total == 1
    await pool._closing.wait()

    async def one_left():  # the server drops a closed socket on its next loop turn, not at once
        return len(await our_connections(r, pool.name)) == 1

    await eventually(one_left, what="the reaped connections closed on the server")


async def test_health_check_replaces_dead_idle_clients(r, make_pool):
    pool = make_pool(min=2, max=2)
    await pool.start()
    ours = await our_connections(r, pool.name)
    killed = {c["id"] for c in ours}
    for conn in ours:
        await kill(r, conn)
    assert await pool.check_idle_health() == 2  # found before any borrower hit them
    assert pool.stats().total == 0
    await pool._fill_to_min()  # what the maintenance task does next
    fresh = {c["id"] for c in await our_connections(r, pool.name)}
    assert len(fresh) == 2 and not fresh & killed
    async with pool.client() as client:
        assert await client.ping()


async def test_close_rejects_waiters_and_closes_every_connection(r, make_pool):
    pool = make_pool(min=2, max=3, acquire_timeout_ms=5000)
    await pool.start()
    borrowed = [await pool.acquire() for _ in range(3)]
    waiter = asyncio.create_task(pool.acquire())
    await eventually(lambda: pool.stats().waiting > 0, interval=0)
    assert len(await our_connections(r, pool.name)) == 3
    await pool.close()
    with pytest.raises(PoolClosedError):
        await waiter
    with pytest.raises(PoolClosedError):
        await pool.acquire()
    for c in borrowed:
        pool.release(c)  # late release after shutdown is harmless

    async def all_closed():  # the server drops a closed socket on its next loop turn, not at once
        return await our_connections(r, pool.name) == []

    await eventually(all_closed, what="every connection closed on the server")


async def test_connection_failure_frees_the_slot(make_pool):
    pool = ClientPool("redis://127.0.0.1:1", limits(max=1))
    try:
        for _ in range(3):  # the failed slot must not leak, or the 2nd try would time out
            with pytest.raises(Exception) as info:
                await pool.acquire()
            assert not isinstance(info.value, PoolExhaustedError)
        assert pool.stats().total == 0
    finally:
        await pool.close()


async def test_blocking_pool_survives_xread_block_past_socket_timeout(r, make_pool):
    """redis-py 8 gives every connection a 5 s socket timeout, which kills a longer BLOCK.
    Shown with a 0.3 s timeout instead of waiting 6 s: the same BLOCK fails on a pool with a
    socket timeout and comes back empty on the blocking pool, which has none."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    class ShortTimeoutPool(ClientPool):
        connection_options = {"socket_timeout": 0.3}

    short = make_pool(cls=ShortTimeoutPool, max=1)
    async with short.client() as client:
        with pytest.raises(RedisTimeoutError):
            await client.xread({node_local("none"): "$"}, block=600)
    blocking = make_pool(cls=BlockingReadPool, name="blocking", max=1)
    async with blocking.client() as client:
        assert await client.xread({node_local("none"): "$"}, block=600) == []
        assert client.connection_pool.connection_kwargs["socket_timeout"] is None
