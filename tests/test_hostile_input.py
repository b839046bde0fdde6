"""Hostile input: each is a 4xx with a JSON detail, never a 500, never unbounded reading."""

import inspect
import json

import pytest
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.test import AsyncClient

from tests.helpers import (
    asgi_response,
    bearer,
    http_scope,
    read_response,
    user_with_token,
)

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 50_000


@pytest.fixture
async def token(r):
    return (await user_with_token("rider"))[1]


auth = bearer


async def test_chunked_body_over_the_limit_is_413_and_reading_stops(token, settings):
    from streamsite.asgi import application

    chunk = b"x" * 65536
    chunks = 48  # 3 MiB, no Content-Length (chunked)
    comm = ApplicationCommunicator(application, http_scope(
        "/api/streams/a/events", method="POST", headers=[(b"authorization", f"Bearer {token}".encode()),
                                          (b"content-type", b"application/json")]))
    for i in range(chunks):
        await comm.send_input({"type": "http.request", "body": chunk, "more_body": i < chunks - 1})
    status, _, body = await read_response(comm)
    assert status == 413 and "STREAMS_MAX_BODY" in json.loads(body)["detail"]
    unread = comm.input_queue.qsize()
    assert unread >= chunks - settings.STREAMS_MAX_BODY // len(chunk) - 1  # stopped at the limit
    await comm.wait(5)


async def test_chunked_body_under_the_limit_goes_through(token):
    from streamsite.asgi import application

    comm = ApplicationCommunicator(application, http_scope(
        "/api/streams/a/events", method="POST", headers=[(b"authorization", f"Bearer {token}".encode()),
                                          (b"content-type", b"application/json")]))
    await comm.send_input({"type": "http.request", "body": b'{"po', "more_body": True})
    await comm.send_input({"type": "http.request", "body": b'wer": 1}', "more_body": False})
    status, _, body = await read_response(comm)
    assert status == 201, body


@pytest.mark.parametrize("path", ["/api/streams/a/events", "/api/batch/streams/info", "/api/workouts",
                                  "/api/streams/a/archive", "/api/shares"])
async def test_deeply_nested_json_is_400(token, path):
    resp = await AsyncClient().post(path, DEEP, content_type="application/json", **auth(token))
    assert resp.status_code == 400, resp.content
    assert resp.json()["detail"]


async def test_deeply_nested_websocket_frame_is_an_error_frame(token):
    from streamsite.asgi import application

    ws = WebsocketCommunicator(application, f"/ws/streams/a/?token={token}")
    assert (await ws.connect())[0]
    try:
        await ws.send_to(text_data=DEEP)
        assert "nested too deeply" in (await ws.receive_json_from(5))["error"]
    finally:
        await ws.disconnect()


@pytest.mark.parametrize("path", ["/api/streams", "/health/metrics", "/metrics", "/api/workouts"])
@pytest.mark.parametrize("header", ["Bearer \u00e9t\u00e9", "Basic abc", "Bearer", "Bearer a b"])
async def test_malformed_authorization_is_401(r, path, header):
    resp = await AsyncClient().get(path, headers={"Authorization": header})
    assert resp.status_code == 401, (path, header, resp.content)
    assert "Authorization" in resp.json()["detail"]


async def test_entry_over_the_size_cap_is_413_naming_it(token, settings):
    settings.STREAM_MAX_ENTRY_BYTES = 1000
    resp = await AsyncClient().post("/api/streams/a/events", json.dumps([{"ok": 1}, {"blob": "x" * 1000}]),
                                    content_type="application/json", **auth(token))
    assert resp.status_code == 413 and "STREAM_MAX_ENTRY_BYTES" in resp.json()["detail"]
    assert "entry 1" in resp.json()["detail"]


async def test_fit_upload_over_its_cap_is_413(token, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.WORKOUTS_MAX_UPLOAD = 1000
    upload = SimpleUploadedFile("ride.fit", b"\0" * 2000)
    resp = await AsyncClient().post("/api/workouts/import", {"file": upload}, **auth(token))
    assert resp.status_code == 413 and "WORKOUTS_MAX_UPLOAD" in resp.json()["detail"]


async def test_forwarded_for_is_believed_only_from_trusted_proxies(r, settings):
    import ipaddress

    settings.DEBUG = False
    spoofed = http_scope("/metrics", headers=[(b"x-forwarded-for", b"127.0.0.1")], client=("8.8.8.8", 1))
    assert (await asgi_response(spoofed))[0] == 403  # a client cannot claim an internal address
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("8.8.8.8/32")]
    assert (await asgi_response(spoofed))[0] == 200  # our proxy says the client is internal


@pytest.mark.parametrize("path", ["/api/streams", "/health/", "/live/a", "/api/nothing", "/admin/login/"])
async def test_security_headers_on_every_path(r, path, settings):
    settings.STREAMS_PUBLIC_READ = True
    resp = await AsyncClient().get(path)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["X-Frame-Options"] == "DENY"


async def asgi_get(path, headers=()):
    return await asgi_response(http_scope(path, headers=list(headers)))


@pytest.mark.parametrize("path", ["/api/streams", "/health/", "/live/a", "/api/nothing", "/admin/login/"])
async def test_security_headers_through_the_production_entry(r, path, settings):
    settings.STREAMS_PUBLIC_READ = True
    _, headers, _ = await asgi_get(path)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"


async def test_lean_paths_check_the_host_except_for_probes(r):
    status, _, body = await asgi_get("/api/streams", headers=[(b"host", b"evil.example")])
    assert status == 400 and b"evil.example" in body
    assert (await asgi_get("/health/", headers=[(b"host", b"10.0.0.7")]))[0] == 200


def test_the_lean_handler_runs_only_the_lean_stack(settings):
    from streamsite.server.handlers import LeanASGIHandler

    before = list(settings.MIDDLEWARE)
    handler = LeanASGIHandler()
    assert settings.MIDDLEWARE == before  # restored after building
    # No CSRF process_view on the API path; django-prometheus' view hook is a coroutine
    # (no thread hop).
    assert [type(m.__self__).__name__ for m in handler._view_middleware] == ["PrometheusAfter"]
    assert all(inspect.iscoroutinefunction(m) for m in handler._view_middleware)
    chain, names = handler._middleware_chain, []
    while chain is not None:
        target = getattr(chain, "__wrapped__", chain)
        names.append(type(target).__name__)
        chain = getattr(target, "get_response", None)
    assert names[:6] == [
        "PrometheusBefore", "LeanGuardMiddleware", "ApiShapeMiddleware", "DatabaseUnavailableMiddleware",
        "RedisUnavailableMiddleware", "PrometheusAfter",
    ]
    assert len(names) == 7
