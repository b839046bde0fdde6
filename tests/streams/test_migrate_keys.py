"""manage.py migrate_stream_keys: streams written before the bucketed layout move to it."""

from __future__ import annotations

from dataclasses import replace
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError

from streams.engine.context import close_redis_context
from streams.store import services as store
from streams.store.keys import legacy_registry_keys, legacy_stream_keys
from tests.helpers import key


def _old_layout(sync_r, settings) -> None:
    prefix = settings.REDIS.stream_key_prefix
    registry = legacy_registry_keys(prefix)
    for name in ("a", "b", "c"):
        sync_r.xadd(legacy_stream_keys(prefix, name).stream, {"power": name})
        sync_r.sadd(registry.names, name)
    sync_r.hset(legacy_stream_keys(prefix, "a").meta, mapping={"owner": "7", "owner_name": "ann", "visibility": "private"})
    sync_r.hset(registry.access, "a", "private|7")
    # c exists in both layouts (a device kept the old key): the new c is written as our services
    # write, so it is in the new registry without waiting for the registry's reconcile task
    _service(lambda: store.stream_publish(name="c", entries=[{"power": "new"}]))


def _run(*args) -> str:
    out = StringIO()
    call_command("migrate_stream_keys", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _service(call):
    async def run():
        try:
            return await call()
        finally:
            await close_redis_context()

    return async_to_sync(run)()


@pytest.fixture
def standalone(private_redis_url, settings):
    """The old layout ran on a standalone Redis: the suite's private one (on a cluster run too)."""
    import redis

    settings.REDIS = replace(settings.REDIS, url=private_redis_url)
    client = redis.Redis.from_url(private_redis_url, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def test_dry_run_then_apply_then_resume(standalone, settings):
    sync_r = standalone
    _old_layout(sync_r, settings)
    prefix = settings.REDIS.stream_key_prefix
    before = _run()
    assert "3 streams in the old layout would move: a, b, c" in before
    assert sync_r.exists(legacy_stream_keys(prefix, "a").stream) == 1  # a dry run moves nothing

    with pytest.raises(CommandError, match="1 streams exist in both layouts"):
        _run("--apply")
    assert sync_r.exists(legacy_stream_keys(prefix, "a").stream, legacy_stream_keys(prefix, "b").stream) == 0
    assert [f["power"] for _, f in sync_r.xrange(key("a"))] == ["a"]
    assert [f["power"] for _, f in sync_r.xrange(key("c"))] == ["new"]  # nothing overwritten
    meta = _service(lambda: store.stream_meta(names=["a"]))["a"]
    assert (meta.owner_id, meta.owner, meta.visibility) == (7, "ann", "private")
    page = _service(lambda: store.streams_list(limit=10))
    assert page.names == ["a", "b", "c"]

    sync_r.delete(key("c"))  # the operator keeps the old c
    assert "moved 1 of 1 streams" in _run("--apply")  # resumed: only what is left
    assert [f["power"] for _, f in sync_r.xrange(key("c"))] == ["c"]
    assert not sync_r.exists(*legacy_registry_keys(prefix).as_list())  # the old registry is gone
    assert "0 streams in the old layout would move" in _run()


def test_a_cluster_has_nothing_to_move(redis_cluster, settings):
    settings.REDIS = replace(settings.REDIS, url=redis_cluster.urls[0])
    with pytest.raises(CommandError, match="Redis Cluster: the layout before buckets ran on a standalone"):
        _run()
