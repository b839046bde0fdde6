"""REDIS_CLUSTER: a Redis Cluster node is refused by name — at start-up, by commands and by
the API — instead of half working (keys of one stream on different nodes)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from streams import topology
from streams.clients import close_redis_context, redis_context
from tests.helpers import asgi_response, http_scope

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "mode,is_cluster,needle",
    [
        ("auto", False, None),
        ("false", False, None),
        ("auto", True, "is a Redis Cluster node (REDIS_CLUSTER=auto asked it)"),
        ("false", True, "REDIS_CLUSTER=false, but REDIS_URL="),
        ("true", False, "REDIS_CLUSTER=true: this version serves a standalone Redis only"),
        ("true", True, "REDIS_CLUSTER=true: this version serves a standalone Redis only"),
    ],
)
def test_verdict_table(mode, is_cluster, needle):
    config = replace(settings.REDIS, cluster=mode, url="redis://:secret@10.0.0.5:6379")
    problem = topology.verdict(config, is_cluster)
    if needle is None:
        assert problem is None
    else:
        assert needle in problem and "secret" not in problem


def test_start_up_asks_the_node(redis_cluster):
    node = replace(settings.REDIS, url=redis_cluster.urls[1])
    with pytest.raises(ImproperlyConfigured, match=r"REDIS_URL=redis://127\.0\.0\.1:\d+ is a Redis Cluster node"):
        topology.check_at_start_up(node)
    with pytest.raises(ImproperlyConfigured, match="REDIS_CLUSTER=false, but"):
        topology.check_at_start_up(replace(node, cluster="false"))
    topology.check_at_start_up(settings.REDIS)  # the suite's standalone Redis: fine


def test_an_unreachable_redis_is_left_to_the_pools():
    dead = replace(settings.REDIS, url="redis://127.0.0.1:1/3")
    topology.check_at_start_up(dead)  # no verdict; the pools report the outage as before


def test_the_server_does_not_start_against_a_cluster(redis_cluster):
    env = {**os.environ, "REDIS_URL": redis_cluster.urls[0], "DJANGO_SETTINGS_MODULE": "streamsite.settings",
           "SECRET_KEY": "x" * 50, "DEBUG": "true"}
    result = subprocess.run([sys.executable, "-c", "import streamsite.asgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "is a Redis Cluster node" in result.stderr


async def test_requests_and_commands_get_a_clear_refusal(redis_cluster, settings):
    import streamsite.asgi  # noqa: F401 - loaded (and checked) with the standalone Redis first

    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=redis_cluster.urls[2])
    try:
        with pytest.raises(topology.UnsupportedTopology, match="is a Redis Cluster node"):
            await redis_context()
        status, _, body = await asgi_response(http_scope("/api/streams"))
        assert status == 503 and b"is a Redis Cluster node" in body
    finally:
        await close_redis_context()


def test_stream_key_prints_the_key_a_device_xadds_to(sync_r):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("stream_key", "ride-42", stdout=out)
    key = out.getvalue().strip()
    assert key == settings.REDIS.stream_key_prefix + "ride-42"
    sync_r.xadd(key, {"power": "250"})  # a device's own XADD to that key …
    from streams.clients import close_redis_context as close
    from asgiref.sync import async_to_sync

    async def listed():
        from streams import operations

        try:
            return (await operations.streams_exist(names=["ride-42"]))["ride-42"]
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


def test_commands_refuse_a_cluster_by_name(redis_cluster, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    settings.REDIS = replace(settings.REDIS, url=redis_cluster.urls[0])
    with pytest.raises(CommandError, match="is a Redis Cluster node"):
        call_command("stream_key", "ride")
    with pytest.raises(CommandError, match="redis unavailable: .*is a Redis Cluster node"):
        call_command("simulate_ride", "ride", "--duration", "1", "--speedup", "0")
