"""The HTTP edge under the production command (the Dockerfile's CMD: uvicorn with
streamsite/server/http.py's protocol), checked with raw sockets: a request's head is bounded
(414 / 431, then closed), a head or body that stalls is cut (408), an idle keep-alive connection
is closed, and normal requests, SSE and WebSocket are untouched by any of it."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.test_shutdown import free_port, production_command

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 1.0  # seconds: the head, body and keep-alive timeouts the server runs with here


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "streamsite.settings", "DEBUG": "false", "SECRET_KEY": "test",
        "ALLOWED_HOSTS": "127.0.0.1", "STREAMS_PUBLIC_READ": "true", "REDIS_URL": settings.REDIS.url,
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}", "LOG_LEVEL": "info", "SECURE_SSL_REDIRECT": "false",
        "HTTP_HEADER_TIMEOUT": str(int(TIMEOUT * 1000)), "HTTP_BODY_TIMEOUT": str(int(TIMEOUT * 1000)),
        "HTTP_KEEP_ALIVE_TIMEOUT": str(int(TIMEOUT * 1000)), "SSE_HEARTBEAT_INTERVAL": "200",
    }
    log = open(tmp / "server.log", "w+")
    program, *args = production_command(port)
    assert "streamsite.server.http:BoundedHttpToolsProtocol" in args  # the production command has the limits
    proc = subprocess.Popen([str(Path(sys.executable).parent / program), *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "server.log").read_text()
            time.sleep(0.1)
        yield port
    finally:
        proc.kill()
        proc.wait()
        log.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    return s


def send(s: socket.socket, data: bytes) -> None:
    """Send what the server takes: it may answer and close before it has read it all."""
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after 10 s open)."""
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def answer(raw: bytes) -> tuple[int, dict, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


def read_response(s: socket.socket) -> tuple[int, dict, dict]:
    """One response (Content-Length or chunked), on a connection that stays open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += s.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers, _ = answer(head + b"\r\n\r\n")
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            body += s.recv(65536)
    else:  # chunked: read to the last chunk, then join the chunks' data
        while not body.endswith(b"0\r\n\r\n"):
            body += s.recv(65536)
        chunks, rest = [], body
        while (size := int(rest.split(b"\r\n", 1)[0], 16)):
            data = rest.split(b"\r\n", 1)[1]
            chunks.append(data[:size])
            rest = data[size + 2:]
        body = b"".join(chunks)
    return status, headers, json.loads(body) if body else {}


def get(path: str = "/health/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def test_a_head_over_the_size_limit_is_431_and_closed(port):
    with connect(port) as s:
        send(s, get(extra=b"X-Big: " + b"a" * 100_000 + b"\r\n"))
        status, headers, body = answer(read_until_closed(s))
    assert status == 431 and headers["connection"] == "close"
    assert "HTTP_MAX_HEADER_BYTES" in body["detail"]


def test_an_unfinished_huge_header_is_cut_without_being_read_whole(port):
    """The 100 MB header that used to be read whole: answered once the limit is passed, long
    before the end of the header (which never comes)."""
    with connect(port) as s:
        send(s, b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        sent = 0
        try:
            while sent < 100 * 1024 * 1024:
                s.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_until_closed(s)
    assert sent < 10 * 1024 * 1024, f"the server read {sent} bytes of one header"
    if raw:  # the answer may be lost to the reset of a connection closed with unread data
        assert answer(raw)[0] == 431


def test_too_many_header_fields_is_431(port):
    with connect(port) as s:
        send(s, get(extra=b"".join(b"X-%d: 1\r\n" % i for i in range(150))))
        status, _, body = answer(read_until_closed(s))
    assert status == 431 and "HTTP_MAX_HEADERS" in body["detail"]


def test_a_request_target_over_the_limit_is_414(port):
    with connect(port) as s:
        send(s, get("/api/streams?x=" + "a" * 20_000))
        status, _, body = answer(read_until_closed(s))
    assert status == 414 and "HTTP_MAX_REQUEST_LINE" in body["detail"]


def test_a_head_that_never_finishes_is_408_and_closed_after_the_timeout(port):
    with connect(port) as s:
        started = time.monotonic()
        send(s, b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        raw = read_until_closed(s)
        took = time.monotonic() - started
    status, headers, body = answer(raw)
    assert status == 408 and headers["connection"] == "close" and "HTTP_HEADER_TIMEOUT" in body["detail"]
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 3


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(port):
    with connect(port) as s:
        started = time.monotonic()
        raw = read_until_closed(s)
        took = time.monotonic() - started
    assert answer(raw)[0] == 408 and TIMEOUT * 0.9 <= took < TIMEOUT + 3


def test_trickled_header_bytes_do_not_extend_the_head_deadline(port):
    """Slowloris: a byte now and then keeps no timer alive; the head has one deadline."""
    with connect(port) as s:
        started = time.monotonic()
        send(s, b"GET /health/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.settimeout(TIMEOUT / 4)
        raw = b""
        for i in range(40):
            try:
                s.sendall(b"X-%d: 1\r\n" % i)
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        took = time.monotonic() - started
    assert answer(raw)[0] == 408 and took < TIMEOUT + 3


def test_a_stalled_body_is_408_and_closed(port):
    with connect(port) as s:
        started = time.monotonic()
        send(s, b"POST /api/streams/edge/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        status, _, body = answer(read_until_closed(s))
        took = time.monotonic() - started
    assert status == 408 and "HTTP_BODY_TIMEOUT" in body["detail"]
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 3


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(port):
    with connect(port) as s:
        send(s, get())
        assert read_response(s)[0] == 200
        started = time.monotonic()
        rest = read_until_closed(s)
        took = time.monotonic() - started
    assert rest == b"" and TIMEOUT * 0.9 <= took < TIMEOUT + 3


def test_normal_requests_keep_alive_and_a_head_just_under_the_limit_passes(port):
    with connect(port) as s:
        for _ in range(3):  # one connection, three requests
            send(s, get(extra=b"X-Fill: " + b"a" * 20_000 + b"\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(80))))
            assert read_response(s)[0] == 200
        # A body that arrives in pieces, each within the body timeout, is read whole.
        body = json.dumps({"power": 1}).encode()
        send(s, b"POST /api/streams/edge/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
        time.sleep(TIMEOUT / 2)  # a slow client, not a stalled one: less than the body timeout
        send(s, body[5:])
        status, _, answered = read_response(s)
    assert status in (401, 403), answered  # the application answered (no token): not a 408


async def test_an_sse_stream_outlives_every_timeout(port):
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", f"http://127.0.0.1:{port}/api/streams/edge-sse/sse") as resp:
            assert resp.status_code == 200
            started = time.monotonic()
            async for _ in resp.aiter_text():  # heartbeats every 200 ms
                if time.monotonic() - started > TIMEOUT * 3:
                    break
            else:
                pytest.fail("the stream ended within three timeouts")


async def test_a_websocket_outlives_every_timeout(port):
    import asyncio

    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/streams/edge-ws/") as ws:
        started = time.monotonic()
        while time.monotonic() - started < TIMEOUT * 3:
            pong = await ws.ping()
            await asyncio.wait_for(pong, 5)
            await asyncio.sleep(TIMEOUT / 2)
