"""Publishes made concurrently share one pipeline (streams/engine/batching.py), against real Redis."""

import asyncio

import pytest
from redis.exceptions import ResponseError

from streams.engine.batching import BatcherClosed, NotReplicated, ScriptBatcher
from streams.engine.context import redis_context
from streams.engine.nodes import is_transient
from streams.store import services as store
from tests.helpers import key


async def test_concurrent_publishes_share_pipelines_and_keep_each_streams_order(r):
    batchers = [node.publishes for node in (await redis_context()).nodes.nodes()]  # one per Redis node
    batches_before, calls_before = sum(b.batches for b in batchers), sum(b.calls for b in batchers)
    calls = [store.stream_publish(name=f"dev-{i % 5}", entries=[{"n": str(i)}]) for i in range(100)]
    replies = await asyncio.gather(*calls)
    assert sum(b.calls for b in batchers) - calls_before == 100
    assert sum(b.batches for b in batchers) - batches_before < 10 * len(batchers)  # coalesced, not 100 round trips
    for stream in range(5):
        stored = await r.xrange(key(f"dev-{stream}"))
        # Every acknowledged id is stored, in the order the calls were made.
        assert [e[0] for e in stored] == [replies[i][0] for i in range(stream, 100, 5)]
        assert [e[1]["n"] for e in stored] == [str(i) for i in range(stream, 100, 5)]


async def test_one_failing_call_does_not_fail_the_others_in_its_pipeline(r):
    await r.set(key("not-a-stream"), "x")  # XADD to it fails with WRONGTYPE inside the script
    good = store.stream_publish(name="fine", entries=[{"a": "1"}])
    bad = store.stream_publish(name="not-a-stream", entries=[{"a": "1"}])
    ok, failed = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(failed, ResponseError) and "WRONGTYPE" in str(failed)
    assert [e[0] for e in await r.xrange(key("fine"))] == ok


async def test_publishes_survive_a_script_flush(private_r):
    await store.stream_publish(name="s", entries=[{"x": "1"}])
    await private_r.script_flush()  # server-wide: hence a Redis of our own
    ids = await asyncio.gather(*(store.stream_publish(name="s", entries=[{"x": str(i)}]) for i in range(3)))
    assert [e[0] for e in await private_r.xrange(key("s"))][1:] == [i[0] for i in ids]


async def test_a_pipeline_no_replica_confirmed_fails_each_answered_call_with_its_reply(private_r):
    """PUBLISH_DURABILITY=replicated: the pipeline ends with WAIT 1; on a Redis without a replica
    it finds none, so a call that ran gets NotReplicated carrying its reply (the write happened),
    and a call that failed keeps its own error."""
    ctx = await redis_context()
    batcher = ScriptBatcher(ctx.nodes.nodes()[0].main, replica_wait_ms=50)
    ran, failed = await asyncio.gather(
        batcher.call(store.script("return 7"), [], []),
        batcher.call(store.script("return redis.error_reply('refused')"), [], []),
        return_exceptions=True,
    )
    assert isinstance(ran, NotReplicated) and ran.reply == 7 and ran.timeout_ms == 50
    assert isinstance(failed, ResponseError) and "refused" in str(failed)
    assert (batcher.batches, batcher.batches_unreplicated, batcher.calls_unreplicated) == (1, 1, 1)
    await batcher.close()


async def test_closing_fails_queued_calls_and_refuses_new_ones(r):
    ctx = await redis_context()
    batcher = ScriptBatcher(ctx.nodes.nodes()[0].main)
    queued = asyncio.ensure_future(batcher.call(store.script("return 1"), [], []))
    await asyncio.sleep(0)  # the call is queued and its flusher task created, not yet run
    await batcher.close()
    with pytest.raises(BatcherClosed):
        await queued
    with pytest.raises(BatcherClosed):
        await batcher.call(store.script("return 1"), [], [])


async def test_retiring_sends_what_is_queued_and_refuses_new_calls_as_a_dropped_connection(r):
    """A node that stops being a primary (failover) still sends the calls queued for it — each
    gets its reply or a MOVED its caller follows — so no write is both made and reported failed."""
    ctx = await redis_context()
    batcher = ScriptBatcher(ctx.nodes.nodes()[0].main)
    queued = [asyncio.ensure_future(batcher.call(store.script("return 7"), [], [])) for _ in range(3)]
    await asyncio.sleep(0)  # queued, flusher created, nothing sent yet
    await batcher.retire("redis node x is no longer a primary", grace_s=5)
    assert await asyncio.gather(*queued) == [7, 7, 7]
    with pytest.raises(BatcherClosed, match="no longer a primary") as refused:
        await batcher.call(store.script("return 7"), [], [])
    assert is_transient(refused.value)  # callers that follow slots try the slot's new node
