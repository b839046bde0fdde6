"""A real server process (daphne, uvicorn): graceful shutdown (listeners end cleanly, nothing
is left open), WebSocket, and write backpressure for a client that stops reading."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.helpers import eventually, key

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    """``manage.py args`` under ``env`` (a server's environment); its output, or the test fails."""
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def production_command(port: int) -> list[str]:
    """The Dockerfile's CMD (the production server and its flags) on a test port, with a long
    graceful timeout: listeners must end because they were told, not because uvicorn gave up."""
    import json
    import re

    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", "")
    cmd = json.loads(re.search(r"^CMD (\[.*?\])", dockerfile, re.M | re.S).group(1))
    swap = {"0.0.0.0": "127.0.0.1", "8000": str(port)}
    cmd = [swap.get(arg, arg) for arg in cmd]
    cmd[cmd.index("--timeout-graceful-shutdown") + 1] = "30"
    return cmd


SERVERS = {
    "daphne": lambda port: ["daphne", "-b", "127.0.0.1", "-p", str(port), "streamsite.asgi:application"],
    "uvicorn": production_command,
}


@pytest.fixture(params=sorted(SERVERS))
async def server(r, tmp_path, request):
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "streamsite.settings", "DEBUG": "false", "SECRET_KEY": "test",
        "ALLOWED_HOSTS": "127.0.0.1", "STREAMS_PUBLIC_READ": "true", "REDIS_URL": settings.REDIS.url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "LOG_LEVEL": "info",
        "MONITORING_TOKEN": "test-monitor", "LIVE_STALL_TIMEOUT": "1500", "LIVE_MAX_BUFFER_BYTES": "65536",
        "SSE_QUEUE_SIZE": "5000",  # more than a test burst: the healthy reader never overflows
    }
    log = open(tmp_path / "server.log", "w+")
    program, *args = SERVERS[request.param](port)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / program), *args],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    assert proc.poll() is None, (tmp_path / "server.log").read_text()
                    await asyncio.sleep(0.1)
        yield request.param, proc, port, tmp_path / "server.log"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


async def connections_of(r, pid: int) -> list[dict]:
    return [c for c in await r.client_list() if c.get("name", "").endswith(f":{pid}")]


async def test_sigterm_ends_listeners_and_closes_every_connection(r, server):
    name, proc, port, log_path = server
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"http://127.0.0.1:{port}/api/streams/ride/sse") as resp:
            assert resp.status_code == 200
            chunks = resp.aiter_text()
            assert "retry:" in await anext(chunks)
            async with asyncio.timeout(10):  # the hub's reader is blocked on our stream
                while not any(c["cmd"] == "xread" for c in await connections_of(r, proc.pid)):
                    await asyncio.sleep(0.05)
            await r.xadd(key("ride"), {"power": "250"})
            assert '"power": "250"' in await anext(chunks)

            proc.send_signal(signal.SIGTERM)
            rest = ""
            async with asyncio.timeout(10):  # well inside uvicorn's graceful timeout
                async for text in chunks:  # ends when the server finishes the response
                    rest += text
            assert "event: shutdown" in rest
    # uvicorn re-raises the signal it captured once it has shut down cleanly (exit by SIGTERM).
    assert proc.wait(timeout=15) == (-signal.SIGTERM if name == "uvicorn" else 0)
    log = log_path.read_text()
    assert "Redis pools closed" in log, log
    assert await connections_of(r, proc.pid) == []


async def test_websocket_follows_and_publishes_under_every_server(r, server):
    """uvicorn answers WebSocket upgrades only with a WebSocket library installed
    (uvicorn[standard] brings websockets): follow and publish through a real process."""
    import json

    import websockets

    name, proc, port, log_path = server
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/streams/wsride/") as ws:
        async with asyncio.timeout(10):  # the hub's reader is blocked on our stream
            while not any(c["cmd"] == "xread" for c in await connections_of(r, proc.pid)):
                await asyncio.sleep(0.05)
        entry_id = await r.xadd(key("wsride"), {"power": "250"})
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message == {"id": entry_id, "data": {"power": "250"}}, log_path.read_text()
        await ws.send(json.dumps({"power": 1}))  # no token: an error frame, the socket stays open
        assert "token" in json.loads(await asyncio.wait_for(ws.recv(), 10))["error"]


async def hub_listeners(port: int) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.get(f"http://127.0.0.1:{port}/health/metrics",
                                headers={"Authorization": "Bearer test-monitor"})
        return resp.json()["hub"]["listeners"]


async def test_a_stalled_reader_is_cut_while_a_healthy_one_gets_everything(r, server):
    """A client that stops reading must not grow the server without bound (daphne has no
    flow control of its own): it is ended, and a healthy listener of the same stream loses
    nothing."""
    name, proc, port, log_path = server
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(b"GET /api/streams/flood/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # then never reads
    total, payload = 3000, "x" * 1000
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream("GET", f"http://127.0.0.1:{port}/api/streams/flood/sse") as resp:
                assert resp.status_code == 200
                await eventually(lambda: hub_listeners(port), what="listeners connected")
                await eventually(lambda: _equals(hub_listeners(port), 2), timeout=10, what="both listeners")
                for start in range(0, total, 500):
                    async with r.pipeline(transaction=False) as pipe:
                        for i in range(start, start + 500):
                            pipe.xadd(key("flood"), {"i": str(i), "pad": payload})
                        await pipe.execute()
                seen = 0
                async with asyncio.timeout(30):
                    async for line in resp.aiter_lines():
                        if line.startswith("data: "):
                            seen += 1
                            if seen == total:
                                break
                assert seen == total  # the healthy listener got every entry
                # the stalled one is ended (overflow / cut) within LIVE_STALL_TIMEOUT and change
                await eventually(lambda: _equals(hub_listeners(port), 1), timeout=15, what="the stalled reader ended")
    finally:
        stalled.close()


async def _equals(value, expected) -> bool:
    return (await value) == expected
