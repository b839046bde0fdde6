"""WEB_CONCURRENCY: several server processes from the image's own entrypoint and command, with
Prometheus multi-process mode set up by the entrypoint."""

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from streams.store import services as store
from tests.helpers import eventually, publish
from tests.test_shutdown import ROOT, free_port, production_command

ENTRYPOINT = str(ROOT / "docker-entrypoint.sh")


def entrypoint_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "streamsite.settings", "DEBUG": "false", "SECRET_KEY": "test",
        "ALLOWED_HOSTS": "127.0.0.1", "STREAMS_PUBLIC_READ": "true", "REDIS_URL": settings.REDIS.url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "MONITORING_TOKEN": "test-monitor",
        "TMPDIR": str(tmp_path), **extra,
    })
    return env


@pytest.mark.parametrize("value", ["two", "0", "-1", ""])
def test_a_bad_web_concurrency_stops_the_entrypoint(tmp_path, value):
    result = subprocess.run(["sh", ENTRYPOINT, "true"], cwd=ROOT, env=entrypoint_env(tmp_path, WEB_CONCURRENCY=value),
                            capture_output=True, text=True, timeout=30)
    if value == "":
        assert result.returncode == 0  # unset or empty: one process
        return
    assert result.returncode == 2 and f"WEB_CONCURRENCY='{value}' must be a positive integer" in result.stderr


def test_the_entrypoint_empties_a_given_multiprocess_dir(tmp_path):
    shared = tmp_path / "prom"
    shared.mkdir()
    (shared / "counter_123.db").write_bytes(b"stale")
    result = subprocess.run(["sh", ENTRYPOINT, "sh", "-c", 'echo "$PROMETHEUS_MULTIPROC_DIR"'], cwd=ROOT,
                            env=entrypoint_env(tmp_path, WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(shared)),
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == str(shared) and not list(shared.iterdir())


async def test_two_processes_share_listeners_metrics_and_shutdown(r, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen(["sh", ENTRYPOINT, *production_command(port)], cwd=ROOT,
                            env=entrypoint_env(tmp_path, WEB_CONCURRENCY="2"), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await client.get(f"{base}/health/")).status_code == 200:
                            break
                    except httpx.TransportError:
                        assert proc.poll() is None, (tmp_path / "server.log").read_text()
                    await asyncio.sleep(0.2)
            prom_dirs = list(tmp_path.glob("streamsite-prometheus.*"))
            assert len(prom_dirs) == 1  # made by the entrypoint, shared by both processes
            async with asyncio.timeout(20):  # both workers have loaded the app (their metric files)
                while len({re.sub(r"\D", "", f.name) for f in prom_dirs[0].glob("*.db")}) < 2:
                    await client.get(f"{base}/health/")
                    await asyncio.sleep(0.1)

            streams = [client.stream("GET", f"{base}/api/streams/multi{i}/sse") for i in range(4)]
            responses = [await s.__aenter__() for s in streams]
            chunks = [resp.aiter_text() for resp in responses]
            for c in chunks:
                assert "retry:" in await anext(c)
            headers = {"Authorization": "Bearer test-monitor"}
            for _ in range(6):  # whichever process answers, the open connections of both are summed
                text = (await client.get(f"{base}/metrics", headers=headers)).text
                assert re.search(r"^streamsite_sse_connections 4\.0$", text, re.M), text[:2000]

            async def live_gauges_summed():  # each process samples its hub every few seconds
                text = (await client.get(f"{base}/metrics", headers=headers)).text
                return (re.search(r"^streamsite_hub_listeners 4\.0$", text, re.M)
                        and re.search(r"^streamsite_hub_keys 4\.0$", text, re.M)
                        and re.search(r'^streamsite_redis_pool_connections\{pool="main",state="total"\} [1-9]', text, re.M))

            await eventually(live_gauges_summed, timeout=20, interval=0.5, what="the hub gauges of both processes summed")

            # A deletion made elsewhere (this test process) ends the followers in both
            # processes, through the service's event stream.
            await publish("multi0", 1)
            await publish("multi1", 1)
            assert (await store.streams_delete(names=["multi0", "multi1"])).deleted == ["multi0", "multi1"]
            async with asyncio.timeout(20):
                for c in chunks[:2]:
                    seen = ""
                    while "event: deleted" not in seen:
                        seen += await anext(c)

            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                for c in chunks[2:]:
                    rest = "".join([text async for text in c])
                    assert "event: shutdown" in rest
            for s in streams:
                await s.__aexit__(None, None, None)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
