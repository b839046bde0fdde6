"""REDIS_CLUSTER: auto finds out what REDIS_URL names; a setting that contradicts the node is
refused by name — at start-up, by commands and by the API; a cluster is served given any node."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from streams.engine import topology
from streams.engine.context import close_redis_context, redis_context
from streams.store.keys import key_layout
from tests.helpers import asgi_response, http_scope

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "mode,is_cluster,needle",
    [
        ("auto", False, None),
        ("auto", True, None),
        ("false", False, None),
        ("true", True, None),
        ("false", True, "REDIS_CLUSTER=false, but REDIS_URL="),
        ("true", False, "REDIS_CLUSTER=true, but REDIS_URL="),
    ],
)
def test_verdict_table(mode, is_cluster, needle):
    config = replace(settings.REDIS, cluster=mode, url="redis://:secret@10.0.0.5:6379")
    problem = topology.verdict(config, is_cluster)
    if needle is None:
        assert problem is None
    else:
        assert needle in problem and "secret" not in problem


def test_start_up_asks_the_node(redis_cluster, private_redis_url):
    node = replace(settings.REDIS, url=redis_cluster.urls[1])
    topology.check_at_start_up(node)  # auto: a cluster node is fine
    with pytest.raises(ImproperlyConfigured, match=r"REDIS_CLUSTER=false, but REDIS_URL=redis://127\.0\.0\.1:\d+ is a"):
        topology.check_at_start_up(replace(node, cluster="false"))
    standalone = replace(settings.REDIS, url=private_redis_url)
    with pytest.raises(ImproperlyConfigured, match="REDIS_CLUSTER=true, but"):
        topology.check_at_start_up(replace(standalone, cluster="true"))
    topology.check_at_start_up(standalone)


def test_an_unreachable_redis_is_left_to_the_pools():
    dead = replace(settings.REDIS, url="redis://127.0.0.1:1/3")
    topology.check_at_start_up(dead)  # no verdict; the first use reports the outage


def test_the_server_does_not_start_when_redis_cluster_contradicts_the_node(redis_cluster):
    env = {**os.environ, "REDIS_URL": redis_cluster.urls[0], "REDIS_CLUSTER": "false",
           "DJANGO_SETTINGS_MODULE": "streamsite.settings", "SECRET_KEY": "x" * 50, "DEBUG": "true"}
    result = subprocess.run([sys.executable, "-c", "import streamsite.asgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "REDIS_CLUSTER=false, but" in result.stderr


async def test_requests_and_commands_get_a_clear_refusal(private_redis_url, settings):
    import streamsite.asgi  # noqa: F401 - loaded (and checked) with the suite's Redis first

    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=private_redis_url, cluster="true")
    try:
        with pytest.raises(topology.UnsupportedTopology, match="REDIS_CLUSTER=true, but"):
            await redis_context()
        status, _, body = await asgi_response(http_scope("/api/streams"))
        # The client hears "redis unavailable", never the address (the log has the reason).
        assert status == 503 and b"redis unavailable" in body
        assert private_redis_url.split("//")[1].split("/")[0].encode() not in body
    finally:
        await close_redis_context()


async def test_the_service_works_on_a_cluster_given_any_node(redis_cluster, settings):
    """REDIS_URL names any node (here the last); streams spread over every primary."""
    from streams.store import services as store

    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=redis_cluster.urls[-1])
    try:
        ctx = await redis_context()
        assert ctx.nodes.cluster and len(ctx.nodes.nodes()) == 3
        names = [f"spread-{i}" for i in range(30)]
        for name in names:
            await store.stream_publish(name=name, entries=[{"i": name}])
        assert len({ctx.nodes.for_key(key_layout(settings.REDIS).stream(n)).address for n in names}) == 3
        assert (await store.streams_list(prefix="spread-", limit=100)).names == sorted(names)
        infos = await store.stream_info_batch(names=names)
        assert all(infos[n].length == 1 for n in names)
        deleted = await store.streams_delete(names=names)
        assert sorted(deleted.deleted) == sorted(names)
        assert (await store.streams_list(prefix="spread-")).names == []
    finally:
        await close_redis_context()


def test_stream_key_prints_the_key_a_device_xadds_to(sync_r):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("stream_key", "ride-42", stdout=out)
    key = out.getvalue().strip()
    assert key == f"{settings.REDIS.stream_key_prefix}{{b{key_layout(settings.REDIS).bucket('ride-42')}}}:ride-42"
    sync_r.xadd(key, {"power": "250"})  # a device's own XADD to that key …
    from asgiref.sync import async_to_sync

    from streams.engine.context import close_redis_context as close

    async def listed():
        from streams.store import services as store

        try:
            return (await store.streams_exist(names=["ride-42"]))["ride-42"]
        finally:
            await close()

    assert async_to_sync(listed)()  # … is the service's stream of that name


@pytest.mark.parametrize("argv,needle", [
    (["stream_key", "bad name"], "invalid stream name"),
])
def test_stream_key_refuses_bad_names(argv, needle):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=needle):
        call_command(*argv)


def test_commands_refuse_a_contradicting_redis_cluster_setting(redis_cluster, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.REDIS = replace(settings.REDIS, url=redis_cluster.urls[0], cluster="false")
    with pytest.raises(CommandError, match="REDIS_CLUSTER=false, but"):
        call_command("stream_key", "ride")
    with pytest.raises(CommandError, match="redis unavailable: REDIS_CLUSTER=false, but"):
        call_command("simulate_ride", "ride", "--duration", "1", "--speedup", "0")


async def test_a_seed_node_stands_in_for_a_down_redis_url(redis_cluster, settings):
    """REDIS_CLUSTER=true with REDIS_URL's node down: the slot map comes from a seed."""
    from streams.store import services as store

    await close_redis_context()
    seed = redis_cluster.urls[1].removeprefix("redis://")
    settings.REDIS = replace(settings.REDIS, url="redis://127.0.0.1:1", cluster="true", cluster_nodes=(seed,))
    try:
        await store.stream_publish(name="seeded", entries=[{"x": "1"}])
        assert "seeded" in (await store.streams_list(prefix="seeded")).names
        await store.streams_delete(names=["seeded"])
    finally:
        await close_redis_context()
