import pytest

from streams.engine.context import redis_context
from streams.store import services as store
from streams.store.registry import StreamRegistry
from tests.helpers import key, registry_set


async def test_publish_many_in_one_call_returns_ids_in_order(r):
    ids = await store.stream_publish(name="ride", entries=[{"power": "1"}, {"power": "2"}])
    assert len(ids) == 2 and ids[0] < ids[1]
    entries = await r.xrange(key("ride"))
    assert [e[1] for e in entries] == [{"power": "1"}, {"power": "2"}]
    assert await r.sismember(registry_set("ride"), "ride")


async def test_publish_trims_approximately_to_maxlen(r, settings):
    from dataclasses import replace

    settings.REDIS = replace(settings.REDIS, stream_maxlen=10)
    for _ in range(30):
        await store.stream_publish(name="trim", entries=[{"i": str(i)} for i in range(10)])
    length = await r.xlen(key("trim"))
    assert 10 <= length < 300  # approximate trimming keeps whole macro nodes


async def test_info_batch_one_round_trip_with_missing_and_wrong_type(r):
    await store.stream_publish(name="a", entries=[{"x": "1"}, {"x": "2"}])
    await r.set(key("notastream"), "1")
    info = await store.stream_info_batch(names=["a", "missing", "notastream"])
    assert info["missing"] is None
    assert info["notastream"] is None
    a = info["a"]
    assert a.length == 2 and a.first_id < a.last_id


async def test_info_batch_uses_one_xinfo_per_stream(private_r):
    await store.stream_publish(name="a", entries=[{"x": "1"}])
    ctx = await redis_context()
    await StreamRegistry.of(ctx).close()  # no background reconcile during the count
    await private_r.config_resetstat()  # server-wide: hence a Redis of our own
    await store.stream_info_batch(names=["a", "b", "c"])
    stats = await private_r.info("commandstats")
    xinfo = stats.get("cmdstat_xinfo|stream") or stats["cmdstat_xinfo"]  # Redis 7 / Redis 6.2 naming
    assert xinfo["calls"] == 3
    assert "cmdstat_xrange" not in stats and "cmdstat_xlen" not in stats


async def test_range_read_tells_missing_from_empty_and_survives_script_flush(private_r):
    ids = await store.stream_publish(name="s", entries=[{"n": str(i)} for i in range(5)])
    assert await store.stream_range(name="missing") is None
    await private_r.script_flush()  # server-wide: hence a Redis of our own
    assert await store.stream_range(name="s", start="0", end="1") == []  # exists, empty range
    got = await store.stream_range(name="s", start=ids[1], end="+", count=2)
    assert [e.id for e in got] == ids[1:3]
    assert got[0].data == {"n": "1"}
    exclusive = await store.stream_range(name="s", start="(" + ids[3], count=None)
    assert [e.id for e in exclusive] == [ids[4]]


async def test_exists_batch(r):
    await store.stream_publish(name="a", entries=[{"x": "1"}])
    await r.set(key("str"), "1")
    assert await store.streams_exist(names=["a", "b", "str"]) == {"a": True, "b": False, "str": False}


async def test_delete_batch_counts_existing_and_unregisters(r):
    await store.stream_publish(name="a", entries=[{"x": "1"}])
    await store.stream_publish(name="b", entries=[{"x": "1"}])
    outcome = await store.streams_delete(names=["a", "b", "zzz", "a"])
    assert outcome.deleted == ["a", "b"] and outcome.refused == []
    assert await r.exists(key("a"), key("b")) == 0
    page = await store.streams_list()
    assert page.names == []


@pytest.mark.parametrize("empty_call", ["stream_info_batch", "streams_exist", "streams_delete"])
async def test_batches_accept_no_names(r, empty_call):
    result = await getattr(store, empty_call)(names=[])
    assert not (result.deleted if empty_call == "streams_delete" else result)
