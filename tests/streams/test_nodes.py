"""streams/engine/nodes.py: where keys live, and following a cluster's redirects."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import redis
from redis.exceptions import AskError, MovedError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.engine.nodes import NodeMap, is_redirect, is_transient, node_url
from tests.cluster import move_slot, node_ids, owner_of


def test_node_url_keeps_scheme_credentials_and_options():
    assert node_url("rediss://user:pw@a.example:6379/3?ssl_cert_reqs=none", "10.0.0.2:7000") == (
        "rediss://user:pw@10.0.0.2:7000?ssl_cert_reqs=none")  # a cluster has database 0 only
    assert node_url("redis://a:1", "b:2") == "redis://b:2"


@pytest.mark.parametrize("exc,redirect,transient", [
    (MovedError("3999 127.0.0.1:7001"), True, True),
    (AskError("3999 127.0.0.1:7001"), True, True),
    (TryAgainError("Multiple keys request during rehashing of slot"), True, True),
    (ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"), True, True),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False, False),
    (RedisConnectionError("Connection reset by peer"), False, True),
])
def test_which_errors_are_followed(exc, redirect, transient):
    assert is_redirect(exc) is redirect and is_transient(exc) is transient


@pytest.fixture
async def cluster_map(redis_cluster, settings):
    nodes = NodeMap(replace(settings.REDIS, url=redis_cluster.urls[0]), cluster=True)
    await nodes.start()
    try:
        yield nodes, redis_cluster
    finally:
        await nodes.close()
        for port in redis_cluster.ports:
            with redis.Redis(port=port) as client:
                client.flushdb()


async def test_keys_go_to_the_primary_serving_their_slot(cluster_map):
    nodes, cluster = cluster_map
    assert sorted(n.address for n in nodes.nodes()) == sorted(f"127.0.0.1:{p}" for p in cluster.ports)
    for key in ("a", "b", "{b3}:ride", "stream:{b7}:x"):
        slot = nodes.slot_of(key)
        assert nodes.for_key(key).address == f"127.0.0.1:{owner_of(cluster, slot)}"


async def test_a_moved_slot_is_followed(cluster_map):
    nodes, cluster = cluster_map
    key = "moving-key"
    await nodes.run(key, lambda r: r.set(key, "1"))
    slot = nodes.slot_of(key)
    target = next(p for p in cluster.ports if p != owner_of(cluster, slot))
    move_slot(cluster, slot, target)  # behind the map's back
    redirects = nodes.redirects
    assert await nodes.run(key, lambda r: r.get(key)) == "1"
    assert nodes.redirects > redirects and nodes.for_key(key).address == f"127.0.0.1:{target}"


async def test_a_key_mid_migration_is_asked_for_on_the_target(cluster_map):
    nodes, cluster = cluster_map
    key = "asked-key"
    await nodes.run(key, lambda r: r.set(key, "v"))
    slot = nodes.slot_of(key)
    source = owner_of(cluster, slot)
    target = next(p for p in cluster.ports if p != source)
    ids = node_ids(cluster)
    src, dst = redis.Redis(port=source), redis.Redis(port=target)
    try:
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
        assert await nodes.run(key, lambda r: r.get(key)) == "v"  # ASK → ASKING on the target
        assert nodes.for_key(key).address == f"127.0.0.1:{source}"  # the slot has not moved yet
    finally:
        for client in (dst, src, *[redis.Redis(port=p) for p in cluster.ports if p not in (source, target)]):
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target])
            client.close()


async def test_a_standalone_redis_is_one_node_serving_every_key(private_redis_url, settings):
    nodes = NodeMap(replace(settings.REDIS, url=private_redis_url), cluster=False)
    await nodes.start()
    try:
        assert len(nodes.nodes()) == 1 and nodes.slot_of("anything") is None
        assert nodes.for_key("a") is nodes.for_key("zz") is nodes.for_slot(None)
    finally:
        await nodes.close()


async def test_a_pipelined_read_follows_a_slot_that_moved(cluster_map):
    """Batch reads (metadata of open follows, info, exists) send one pipeline per node; an item
    whose slot moved meanwhile is answered MOVED inside the pipeline and is run again alone."""
    nodes, cluster = cluster_map
    keys = ["p-a", "p-b", "p-c"]
    for key in keys:
        await nodes.run(key, lambda r, key=key: r.set(key, key.upper()))
    slot = nodes.slot_of("p-b")
    move_slot(cluster, slot, next(p for p in cluster.ports if p != owner_of(cluster, slot)))
    replies = await nodes.pipelined(keys, lambda pipe, i: pipe.get(keys[i]))
    assert replies == [["P-A"], ["P-B"], ["P-C"]]


async def test_a_reader_backing_off_wakes_when_a_refresh_moves_a_slot(cluster_map):
    """``map_change``: a hub reader waiting out a failover wakes when anyone's refresh learns
    the new owner of a slot, not at the end of its backoff; a refresh that moves nothing
    wakes nobody."""
    nodes, cluster = cluster_map
    waiting = asyncio.ensure_future(nodes.map_change(60))
    await nodes.refresh(force=True)  # the same map: nothing moved
    await asyncio.sleep(0)
    assert not waiting.done()
    await asyncio.sleep(0)  # the waiter holds the current event
    slot = nodes.slot_of("waking-key")
    move_slot(cluster, slot, next(p for p in cluster.ports if p != owner_of(cluster, slot)))
    await nodes.refresh(force=True)
    async with asyncio.timeout(5):  # far under the 60 s backoff: the move woke it
        await waiting
