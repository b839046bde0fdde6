"""WebSocket like the browser's web (issue 20, items 4, 5 and the sockets of 2): the Origin
check (WEBSOCKET_ALLOWED_ORIGINS, independent of ALLOWED_HOSTS), the CSRF proof for publishing
over a session, frames bounded by STREAMS_MAX_BODY, unrouted paths refused cleanly, the token
out of the URL (the ``Sec-WebSocket-Protocol`` carrier) and out of the log, a session's follows
ending with the session, publish-only sockets counted per user, the publish rate on sockets.
The browser's side of the Origin check: tests/test_pages_websocket.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import AsyncClient

from streams.models import ApiToken
from streams.store import services as store
from tests.helpers import actor, make_user, user_with_token
from tests.streams.sse_client import SSEClient
from tests.streams.test_websocket import listening, open_ws

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


async def refusal(app, path: str, headers=(), subprotocols=None) -> tuple[int, dict]:
    """(status, JSON body) of a refused handshake, on a server that offers the
    ASGI WebSocket Denial Response extension (uvicorn does)."""
    scope = {
        "type": "websocket", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), *headers], "subprotocols": subprotocols or [],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "scheme": "ws",
        "extensions": {"websocket.http.response": {}},
    }
    comm = ApplicationCommunicator(app, scope)
    await comm.send_input({"type": "websocket.connect"})
    start = await comm.receive_output(5)
    assert start["type"] == "websocket.http.response.start", start
    body = await comm.receive_output(5)
    await comm.wait(5)
    return start["status"], json.loads(body["body"])


async def length(name: str) -> int:
    return len(await store.stream_range(name=name, start="-", end="+", count=1000) or [])


# --- 1. Origin ----------------------------------------------------------------------------------
@pytest.mark.parametrize("origin,allowed,accepted", [
    (None, [], True),  # a device: no Origin at all
    (b"http://testserver", [], True),  # this server's own page
    (b"http://TestServer:80", [], True),  # the same origin, spelled out
    (b"null", [], False),  # a sandboxed frame, a file: page
    (b"null", ["*"], False),  # even with every origin allowed
    (b"https://evil.example", [], False),
    (b"http://testserver:8001", [], False),  # another port of the same host: another origin
    (b"https://testserver", [], False),  # another scheme: a page over https does not open ws://
    (b"https://app.example.com", ["https://app.example.com"], True),
    (b"https://app.example.com:8443", ["https://app.example.com"], False),
    (b"https://a.example.com", ["https://*.example.com"], True),
    (b"http://a.example.com", ["https://*.example.com"], False),
    (b"https://example.com.evil.example", ["https://*.example.com"], False),
    (b"https://evil.example", ["*"], True),
])
async def test_the_origin_must_be_this_servers_own_or_allowed(sockets, r, settings, origin, allowed, accepted):
    from streamsite.routing import websocket_application

    settings.STREAMS_PUBLIC_READ = True
    settings.ALLOWED_HOSTS = ["*"]  # let every Origin through when the check used ALLOWED_HOSTS
    settings.WEBSOCKET_ALLOWED_ORIGINS = allowed
    headers = [(b"host", b"testserver")] + ([(b"origin", origin)] if origin is not None else [])
    _, connected, _ = await open_ws(websocket_application(), sockets, "/ws/streams/ride/", headers=headers)
    assert connected is accepted


async def test_a_refused_origin_answers_403_naming_the_setting(app, r, settings):
    settings.ALLOWED_HOSTS = ["*"]
    status, body = await refusal(app, "/ws/streams/ride/", headers=[(b"origin", b"https://evil.example")])
    assert status == 403
    assert "https://evil.example" in body["detail"] and "WEBSOCKET_ALLOWED_ORIGINS" in body["detail"]
    status, body = await refusal(app, "/ws/streams/ride/metrics/", headers=[(b"origin", b"null")])
    assert status == 403 and "'null'" in body["detail"]


def test_a_malformed_allowed_origin_stops_start_up_naming_the_setting(settings):
    from django.core.exceptions import ImproperlyConfigured

    from streamsite.routing import websocket_application

    settings.WEBSOCKET_ALLOWED_ORIGINS = ["app.example.com"]  # no scheme
    with pytest.raises(ImproperlyConfigured, match="WEBSOCKET_ALLOWED_ORIGINS: 'app.example.com'"):
        websocket_application()


# --- 2. a session publishes only with the CSRF proof --------------------------------------------
async def logged_in(user) -> tuple[AsyncClient, str]:
    client = AsyncClient()
    await client.aforce_login(user)
    return client, client.cookies[django_settings.SESSION_COOKIE_NAME].value


def csrf_pair() -> tuple[str, str]:
    """(the CSRF cookie's secret, a page's masked token for it): Django's own get_token."""
    from django.http import HttpRequest
    from django.middleware.csrf import get_token

    request = HttpRequest()
    token = get_token(request)
    return request.META["CSRF_COOKIE"], token


def session_headers(session: str, csrf_cookie: str | None = None) -> list[tuple[bytes, bytes]]:
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={session}"
    if csrf_cookie:
        cookie += f"; {django_settings.CSRF_COOKIE_NAME}={csrf_cookie}"
    return [(b"cookie", cookie.encode()), (b"origin", b"http://testserver"), (b"host", b"testserver")]


async def publish_reply(ws, frame: dict) -> dict:
    await ws.send_to(text_data=json.dumps(frame))
    while True:
        reply = await ws.receive_json_from(5)
        if "ids" in reply or "error" in reply:
            return reply


async def test_publishing_over_a_session_needs_the_csrf_token(app, sockets, settings):
    settings.STREAMS_PUBLIC_READ = False
    rider = await sync_to_async(make_user)("csrf-rider")
    await store.stream_settings_update(name="mine", actor=actor(rider))
    _, session = await logged_in(rider)
    secret, token = csrf_pair()
    _, other_token = csrf_pair()

    # Without a proof (what another site's page could do with the cookie): follows, never publishes.
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/mine/", headers=session_headers(session, secret))
    assert connected
    reply = await publish_reply(ws, {"power": 1})
    assert "CSRF" in reply["error"] and "?csrf=" in reply["error"] and reply["final"] is True
    for wrong in (other_token, "nonsense"):  # a token of another secret; not a token at all
        ws, _, _ = await open_ws(app, sockets, f"/ws/streams/mine/?csrf={wrong}", headers=session_headers(session, secret))
        assert "CSRF" in (await publish_reply(ws, {"power": 1}))["error"]
    ws, _, _ = await open_ws(app, sockets, f"/ws/streams/mine/?csrf={token}", headers=session_headers(session))
    assert "CSRF" in (await publish_reply(ws, {"power": 1}))["error"]  # no CSRF cookie to match
    assert await length("mine") == 0

    # With the page's CSRF token for its cookie: publishes, like a REST write with X-CSRFToken.
    ws, _, _ = await open_ws(app, sockets, f"/ws/streams/mine/?csrf={token}", headers=session_headers(session, secret))
    await listening("mine")
    reply = await publish_reply(ws, {"power": 2})
    assert len(reply["ids"]) == 1 and await length("mine") == 1
    # The raw secret (the cookie's own value) is accepted too, as Django accepts it in X-CSRFToken.
    ws, _, _ = await open_ws(app, sockets, f"/ws/streams/mine/?csrf={secret}", headers=session_headers(session, secret))
    assert "ids" in await publish_reply(ws, {"power": 3})


async def test_a_token_device_needs_no_csrf_proof(app, sockets, settings):
    settings.STREAMS_PUBLIC_READ = False
    device, token = await user_with_token("csrf-device")
    _, session = await logged_in(await sync_to_async(make_user)("someone-else"))
    headers = [*session_headers(session), (b"authorization", f"Bearer {token}".encode())]
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/dev-ride/", headers=headers)
    assert connected
    assert "ids" in await publish_reply(ws, {"power": 1})


# --- 3. frames bounded by the REST body limit ---------------------------------------------------
async def test_a_frame_over_streams_max_body_gets_an_error_frame_naming_it(app, sockets, settings):
    settings.STREAMS_MAX_BODY = 1000
    _, token = await user_with_token("big-frames")
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/frames/?token={token}")
    assert connected
    fits = json.dumps({"x": "a" * 900})
    too_big = json.dumps({"x": "a" * 1000})
    multibyte = json.dumps({"x": "é" * 600})  # 600 characters, 1,200 bytes
    assert "ids" in await publish_reply(ws, json.loads(fits))
    for frame in (too_big, multibyte):
        reply = await publish_reply(ws, json.loads(frame))
        assert "STREAMS_MAX_BODY" in reply["error"] and "1000 bytes" in reply["error"], reply
    await ws.send_to(bytes_data=too_big.encode())
    assert "STREAMS_MAX_BODY" in (await ws.receive_json_from(5))["error"]
    assert await length("frames") == 1
    assert "ids" in await publish_reply(ws, {"x": "still open"})


def test_the_server_processes_take_their_frame_limit_from_streams_max_body():
    """scripts/processes.sh (sourced by docker-entrypoint.sh and ./dev.sh serve) sets uvicorn's
    --ws-max-size (its UVICORN_WS_MAX_SIZE) to STREAMS_MAX_BODY unless it is set."""

    def ws_max_size(**env) -> str:
        script = '. scripts/processes.sh && setup_processes && printf %s "$UVICORN_WS_MAX_SIZE"'
        base = {k: v for k, v in os.environ.items() if k not in ("STREAMS_MAX_BODY", "UVICORN_WS_MAX_SIZE")}
        result = subprocess.run(["sh", "-c", script], cwd=ROOT, env={**base, **env}, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert ws_max_size() == str(1024 * 1024)  # STREAMS_MAX_BODY's default
    assert ws_max_size(STREAMS_MAX_BODY="4096") == "4096"
    assert ws_max_size(STREAMS_MAX_BODY="4096", UVICORN_WS_MAX_SIZE="8192") == "8192"


# --- 4. unrouted paths --------------------------------------------------------------------------
async def test_an_unrouted_path_is_refused_cleanly(app, sockets, r, caplog):
    caplog.set_level(logging.DEBUG)
    _, connected, _ = await open_ws(app, sockets, "/ws/nothing/")
    assert not connected
    status, body = await refusal(app, "/ws/streams/a/b/c/")
    assert status == 404 and "/ws/streams/a/b/c/" in body["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- 5. tokens out of URLs and logs --------------------------------------------------------------
async def test_the_token_rides_in_the_websocket_subprotocol(app, sockets, settings):
    settings.STREAMS_PUBLIC_READ = False
    device, token = await user_with_token("subprotocol-device")
    await store.stream_settings_update(name="sub-ride", actor=actor(device))
    ws = WebsocketCommunicator(app, "/ws/streams/sub-ride/", subprotocols=["streamsite.token", token])
    sockets.append(ws)
    connected, subprotocol = await ws.connect()
    assert connected and subprotocol == "streamsite.token"  # a browser requires the answer
    await listening("sub-ride")  # private: it follows as the token's owner
    await ws.send_to(text_data=json.dumps({"power": 1}))
    replies = [await ws.receive_json_from(5) for _ in range(2)]  # the ack and the entry, either first
    assert [m["data"] for m in replies if "data" in m] == [{"power": "1"}] and any("ids" in m for m in replies)

    metrics = WebsocketCommunicator(app, "/ws/streams/sub-ride/metrics/", subprotocols=["streamsite.token", token])
    sockets.append(metrics)
    assert await metrics.connect() == (True, "streamsite.token")

    for offered, detail in ((["streamsite.token"], "followed by the API token"), (["streamsite.token", "nope"], "invalid")):
        bad = WebsocketCommunicator(app, "/ws/streams/sub-ride/", subprotocols=offered)
        sockets.append(bad)
        assert (await bad.connect())[0]  # accepted, to say why in a frame
        assert detail in (await bad.receive_json_from(5))["error"]
        assert await bad.receive_output(5) == {"type": "websocket.close", "code": 4401}


def test_uvicorns_handshake_lines_have_no_token(caplog):
    """uvicorn logs every handshake's path and query on ``uvicorn.error`` (its websockets
    protocol: ``'%s - "WebSocket %s" [accepted]'``); settings.LOGGING filters that logger."""
    caplog.set_level(logging.INFO)
    secret = "st_" + "x" * 43
    log = logging.getLogger("uvicorn.error")
    log.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", f"/ws/streams/a/?token={secret}&from=start")
    log.info('%s - "WebSocket %s" 403', "127.0.0.1:5000", f"/ws/streams/a/?from=start&csrf={secret}")
    log.info(f'"WebSocket /ws/streams/a/?TOKEN={secret}"')
    assert secret not in caplog.text
    assert caplog.text.count("[redacted]") == 3 and "from=start" in caplog.text


# --- 6. a session's follows end with the session -------------------------------------------------
async def end_the_session(how: str, user, client: AsyncClient, session: str) -> None:
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    if how == "logout":
        await client.alogout()
    elif how == "password change":  # elsewhere: this session's auth hash is stale now
        await sync_to_async(user.set_password)("a new password")
        await user.asave()
    else:  # "expiry"
        await Session.objects.filter(session_key=session).aupdate(expire_date=timezone.now())


async def sse_forbidden(sse: SSEClient) -> None:
    while (event := await sse.next_event(timeout=10)).event != "forbidden":
        assert event.event in (None, "message"), event  # entries, the retry line, heartbeats


@pytest.mark.parametrize("how", ["logout", "password change", "expiry"])
async def test_a_sessions_follows_end_with_it(app, sockets, settings, how):
    settings.STREAMS_PUBLIC_READ = False
    settings.ACCESS_RECHECK_INTERVAL_MS = 100
    settings.AUTH_CACHE_TTL_MS = 50
    rider = await sync_to_async(make_user)(f"session-rider-{how.replace(' ', '-')}", password="old password")
    await store.stream_settings_update(name="mine", actor=actor(rider))
    await store.stream_publish(name="mine", entries=[{"t": "0", "power": "100"}], actor=actor(rider))
    client, session = await logged_in(rider)
    secret, csrf = csrf_pair()
    headers = session_headers(session, secret)
    ws, connected, _ = await open_ws(app, sockets, "/ws/streams/mine/", headers=headers)
    assert connected
    metrics, connected, _ = await open_ws(app, sockets, "/ws/streams/mine/metrics/", headers=headers)
    assert connected
    # publish-only: a stream nobody has yet is not readable, but may be created
    publisher, connected, _ = await open_ws(app, sockets, f"/ws/streams/mine-new/?csrf={csrf}", headers=headers)
    assert connected
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={session}"
    sse = await SSEClient("/api/streams/mine/sse?from=start", headers={"Cookie": cookie}).connect()
    try:
        assert sse.status == 200
        assert (await metrics.receive_json_from(5))["event"] == "metrics"
        await listening("mine")
        assert "ids" in await publish_reply(publisher, {"t": 1})  # the session works
        await store.stream_publish(name="mine", entries=[{"t": "1", "power": "110"}], actor=actor(rider))
        assert (await ws.receive_json_from(5))["data"] == {"t": "1", "power": "110"}

        await end_the_session(how, rider, client, session)

        await sse_forbidden(sse)
        assert (await ws.receive_json_from(10))["event"] == "forbidden"
        assert await ws.receive_output(5) == {"type": "websocket.close", "code": 4403}
        while (message := await metrics.receive_json_from(10))["event"] == "metrics":
            pass
        assert message["event"] == "forbidden"
        assert await metrics.receive_output(5) == {"type": "websocket.close", "code": 4403}
        reply = await publish_reply(publisher, {"t": 2})
        assert "no longer valid" in reply["error"]
        assert await publisher.receive_output(5) == {"type": "websocket.close", "code": 4401}
        assert await length("mine-new") == 1
    finally:
        await sse.close()


# --- 7. publish-only sockets count per user; the publish rate ------------------------------------
async def test_publish_only_sockets_take_places_in_the_per_user_connection_cap(app, sockets, settings):
    settings.LIVE_MAX_CONNECTIONS_PER_USER = 2
    device = await sync_to_async(make_user)("publish-only")
    _, token = await sync_to_async(ApiToken.issue)(user=device, scopes=("publish",))
    path = f"/ws/streams/device-ride/?token={token}"
    first, connected, _ = await open_ws(app, sockets, path)
    assert connected and "ids" in await publish_reply(first, {"power": 1})
    second, connected, _ = await open_ws(app, sockets, path)
    assert connected
    third, connected, _ = await open_ws(app, sockets, path)
    assert connected  # accepted, to say why in a frame
    refused = await third.receive_json_from(5)
    assert "LIVE_MAX_CONNECTIONS_PER_USER=2" in refused["error"] and "final" not in refused  # it can clear
    assert await third.receive_output(5) == {"type": "websocket.close", "code": 4429}
    await second.disconnect()  # its place is given back
    again, connected, _ = await open_ws(app, sockets, path)
    assert connected and "ids" in await publish_reply(again, {"power": 2})


async def test_socket_publishing_keeps_the_publish_rate(app, sockets, settings):
    from streams.live import capacity

    capacity.publish_rate.clear()
    settings.PUBLISH_RATE_PER_TOKEN = 1  # a bucket of 10 entries
    _, token = await user_with_token("fast-device")
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/rate-ride/?token={token}")
    assert connected
    assert len((await publish_reply(ws, [{"i": i} for i in range(10)]))["ids"]) == 10
    reply = await publish_reply(ws, {"i": 10})
    assert "PUBLISH_RATE_PER_TOKEN=1" in reply["error"] and reply["retry_after"] >= 1
    assert "final" not in reply  # later, the same frame is stored
    assert await length("rate-ride") == 10
    capacity.publish_rate.clear()


async def test_a_refused_socket_publish_is_an_error_frame_not_a_dropped_socket(app, sockets, settings):
    """The store's refusals beyond the owner rule (the streams-per-owner quota here) reach the
    device as an error frame naming the limit; the socket stays open."""
    settings.STREAMS_MAX_PER_USER = 1
    device, token = await user_with_token("quota-device")
    await store.stream_settings_update(name="owned-one", actor=actor(device))
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/one-too-many/?token={token}")
    assert connected
    reply = await publish_reply(ws, {"power": 1})
    assert "STREAMS_MAX_PER_USER=1" in reply["error"] and reply["final"] is True
    await store.streams_delete(names=["owned-one"])
    assert "ids" in await publish_reply(ws, {"power": 2})


async def test_a_publish_to_someone_elses_stream_is_refused_for_good(app, sockets):
    """A reader of another owner's public stream may follow it over the socket, not publish:
    the error frame is ``final`` (the /ride/ page stops instead of sending it again); nothing
    is stored and the socket stays open."""
    owner, _ = await user_with_token("the-owner")
    await store.stream_settings_update(name="not-yours", actor=actor(owner), visibility="public")
    _, token = await user_with_token("a-reader")
    ws, connected, _ = await open_ws(app, sockets, f"/ws/streams/not-yours/?token={token}")
    assert connected
    reply = await publish_reply(ws, {"power": 1})
    assert reply == {"error": "only the owner of stream 'not-yours' or a stream manager may publish to it", "final": True}
    assert (await store.stream_info_batch(names=["not-yours"]))["not-yours"].length == 0
    await store.streams_delete(names=["not-yours"])
