"""PUBLISH_DURABILITY: "acknowledged" means "on a replica too" when asked (issue 21, part 4).

Each test runs against a primary + replica pair of its own (tests/replication.py) whose
replication link it can cut."""

import asyncio
import json
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient
from redis.crc import key_slot
from redis.exceptions import RedisError

from monitoring.checks import snapshot
from streams.core.instruments import PUBLISHES_UNREPLICATED
from streams.engine.context import close_redis_context, redis_context
from streams.store import services as store
from tests.cluster import add_replica, owner_of, start_cluster
from tests.helpers import bearer, key, user_with_token
from tests.replication import replicated_pair

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair():
    with replicated_pair() as pair:
        yield pair


@pytest.fixture
async def use_pair(pair, settings):
    """``use_pair(durability, timeout_ms)`` points the app at the pair's primary."""

    async def use(durability: str, timeout_ms: int = 1000):
        await close_redis_context()
        settings.REDIS = replace(settings.REDIS, url=pair.primary_url, cluster="auto",
                                 publish_durability=durability, publish_replica_timeout_ms=timeout_ms)

    yield use
    await close_redis_context()


def unreplicated_count() -> float:
    return PUBLISHES_UNREPLICATED.collect()[0].samples[0].value


async def publish(client, token, name, body):
    return await client.post(f"/api/streams/{name}/events", data=json.dumps(body),
                             content_type="application/json", **bearer(token))


async def test_a_publish_no_replica_confirmed_answers_503_naming_the_ids_written(app, pair, use_pair):
    await use_pair("replicated", timeout_ms=200)
    _, token = await user_with_token("rider")
    client = AsyncClient()
    replica = pair.replica()

    ok = await publish(client, token, "ride", {"power": 200})
    assert ok.status_code == 201, ok.content
    assert replica.xrange(key("ride")) != []  # acknowledged: the replica has it already

    pair.relay.cut()
    before = unreplicated_count()
    cut = await publish(client, token, "ride", [{"power": 210}, {"power": 220}])
    assert cut.status_code == 503, cut.content
    body = cut.json()
    assert body["detail"].startswith("not replicated within 200 ms")
    assert len(body["ids"]) == 2
    primary_ids = [entry_id for entry_id, _ in await _primary_range(pair, "ride")]
    assert primary_ids == [ok.json()["ids"][0], *body["ids"]]  # written all the same
    assert unreplicated_count() == before + 1
    assert "Retry-After" not in cut.headers  # a blind retry would store them twice

    ws = WebsocketCommunicator(app, f"/ws/streams/ride/?token={token}")
    assert (await ws.connect())[0]
    await ws.send_to(text_data=json.dumps({"power": 230}))
    frame = await ws.receive_json_from(5)
    while "error" not in frame:  # the entry itself may come first (the socket follows too)
        frame = await ws.receive_json_from(5)
    assert frame["error"].startswith("not replicated within 200 ms") and len(frame["ids"]) == 1
    await ws.disconnect()

    durability = (await snapshot())["publish_durability"]
    assert durability["mode"] == "replicated" and durability["replica_timeout_ms"] == 200
    assert durability["publishes_unreplicated"] >= 2 and durability["pipelines_unreplicated"] >= 2

    pair.relay.restore()
    await asyncio.to_thread(pair.wait_linked)
    again = await publish(client, token, "ride", {"power": 240})
    assert again.status_code == 201, again.content
    assert len(replica.xrange(key("ride"))) == 5  # the resync brought the unconfirmed ones too
    replica.close()


async def test_primary_durability_answers_without_a_replica(pair, use_pair):
    await use_pair("primary")
    pair.relay.cut()
    ids = await store.stream_publish(name="ride", entries=[{"power": "1"}])
    assert len(ids) == 1  # today's behaviour: the primary's write is the acknowledgement


@pytest.mark.parametrize("durability", ["replicated", "primary"])
async def test_a_failover_after_the_link_is_cut_loses_acknowledged_entries_only_with_primary(
    pair, use_pair, durability
):
    """The chaos case of issue 21: entries flow, the replication link is cut, 0.5 s later the
    primary is SIGKILLed and its replica promoted. With ``replicated`` every acknowledged entry
    is on the new primary; with ``primary`` the ones acknowledged after the cut are gone."""
    await use_pair(durability, timeout_ms=1000)
    streams = [f"ride-{n}" for n in range(4)]
    acked: list[tuple[str, str]] = []
    acked_after_cut: list[tuple[str, str]] = []
    stop = asyncio.Event()
    cut = False

    async def rider(name: str) -> None:
        i = 0
        while not stop.is_set():
            try:
                (entry_id,) = await store.stream_publish(name=name, entries=[{"i": str(i)}])
            except (store.PublishNotReplicated, RedisError, OSError):
                await asyncio.sleep(0.01)  # not acknowledged: the client would try again
                continue
            acked.append((name, entry_id))
            if cut:
                acked_after_cut.append((name, entry_id))
            i += 1
            await asyncio.sleep(0.01)

    riders = [asyncio.create_task(rider(name)) for name in streams]
    await asyncio.sleep(0.5)  # entries flow, acknowledged and replicated
    pair.relay.cut()
    cut = True
    await asyncio.sleep(0.5)
    pair.kill_primary()
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*riders)
    pair.promote()

    replica = pair.replica()
    kept = {(name, entry_id) for name in streams for entry_id, _ in replica.xrange(key(name))}
    replica.close()
    lost = [entry for entry in acked if entry not in kept]
    print(f"{durability}: acknowledged {len(acked)} ({len(acked_after_cut)} after the cut), lost {len(lost)}")
    assert len(acked) > 40  # the riders did publish before the cut
    if durability == "replicated":
        assert lost == []
    else:  # the loss PUBLISH_DURABILITY=replicated prevents: what was acknowledged after the
        # cut (less the last acknowledgements each rider had on its way as the link went)
        assert lost and len(lost) >= len(acked_after_cut) - len(streams)


@pytest.fixture
def cluster_one_replica():
    """A 3-primary cluster of this test's own where only the first primary has a replica."""
    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        pytest.skip(f"cannot start a local Redis Cluster: {exc}")
    try:
        add_replica(cluster, cluster.ports[0])
        yield cluster
    finally:
        cluster.stop()


async def test_on_a_cluster_each_primary_waits_for_its_own_replica(cluster_one_replica, settings):
    cluster = cluster_one_replica
    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=cluster.urls[0], cluster="auto",
                             publish_durability="replicated", publish_replica_timeout_ms=300)
    try:
        names = [f"ride-{i}" for i in range(200)]
        on_replicated = next(n for n in names if owner_of(cluster, key_slot(key(n).encode())) == cluster.ports[0])
        elsewhere = next(n for n in names if owner_of(cluster, key_slot(key(n).encode())) != cluster.ports[0])
        await redis_context()  # the map and pools first: only the publishes are timed
        (replicated, fast), (alone, slow) = await asyncio.gather(
            _timed(store.stream_publish(name=on_replicated, entries=[{"x": "1"}])),
            _timed(store.stream_publish(name=elsewhere, entries=[{"x": "1"}])),
        )
        assert isinstance(replicated, list) and len(replicated) == 1, replicated
        assert isinstance(alone, store.PublishNotReplicated) and len(alone.ids) == 1, alone
        # Each node's pipeline waits for its own replicas: the replicated one is not held up.
        assert fast < 0.3 <= slow, (fast, slow)
    finally:
        await close_redis_context()


async def _timed(coro) -> tuple[object, float]:
    """(result or exception, seconds)."""
    started = asyncio.get_running_loop().time()
    try:
        result = await coro
    except Exception as exc:
        result = exc
    return result, asyncio.get_running_loop().time() - started


async def _primary_range(pair, name: str) -> list:
    client = aioredis.Redis.from_url(pair.primary_url, decode_responses=True)
    try:
        return await client.xrange(key(name))
    finally:
        await client.aclose()

