"""What the README and docs/ promise and no other test checked."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import AsyncClient

from streams.engine.context import redis_context
from streams.live.hub import StreamHub
from streams.models import ApiToken, hash_token
from streams.store import services as store
from streams.store.keys import key_layout
from tests.helpers import (
    actor,
    asgi_response,
    bearer,
    eventually,
    http_scope,
    make_user,
    user_with_token,
)
from tests.streams.sse_client import SSEClient
from tests.workouts.fitwriter import write_fit
from workouts import metrics as M
from workouts.models import Workout
from workouts.samples import samples_from_columns
from workouts.services import workout_create

ROOT = Path(__file__).resolve().parent.parent
START = dt.datetime(2026, 11, 3, 17, 0, tzinfo=dt.UTC)
tx = pytest.mark.django_db(transaction=True)


def ws_app():
    from streamsite.asgi import application

    return application


# --- commands -----------------------------------------------------------------------------
@pytest.mark.django_db
def test_demo_setup_prints_a_working_admin_and_token(capsys):
    call_command("demo_setup", "--base-url", "http://example.test")
    out = capsys.readouterr().out
    password = re.search(r"password (\S+)", out).group(1)
    token = re.search(r"API token:\s+(\S+)", out).group(1)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    assert ApiToken.objects.filter(user=admin, key_hash=hash_token(token), is_active=True).exists()
    assert "http://example.test/api/streams/demo/events" in out
    call_command("demo_setup")  # again: a new password, same user
    assert get_user_model().objects.filter(username="admin").count() == 1
    assert not get_user_model().objects.get(username="admin").check_password(password)


def ride(n=900):
    t = list(range(n))
    return {"t": t, "power": [200 + (i % 40) for i in t], "heart_rate": [140] * n}


@pytest.mark.django_db
def test_recompute_metrics_all_in_chunks():
    rider = make_user("rider")
    made = [workout_create(athlete=rider, title=f"r{i}", started_at=START, samples=samples_from_columns(ride(600)))
            for i in range(5)]
    Workout.objects.update(normalized_power=None, metrics_version=0)
    call_command("recompute_metrics", "--all", "--chunk", "2")
    for w in made:
        w.refresh_from_db()
        assert w.normalized_power is not None and w.metrics_version == M.METRICS_VERSION


@tx
def test_archive_stream_title_ftp_and_keep(sync_r):
    make_user("rider")
    pipe = sync_r.pipeline(transaction=False)
    from tests.helpers import key

    for i in range(700):
        pipe.xadd(key("kept"), {"t": str(i), "power": str(180 + i % 50)})
    pipe.execute()
    call_command("archive_stream", "kept", "--athlete", "rider", "--title", "Hill repeats", "--ftp", "240", "--force")
    w = Workout.objects.get()
    assert (w.title, w.ftp, w.sample_count) == ("Hill repeats", 240, 700)
    assert w.intensity_factor == pytest.approx(w.normalized_power / 240)
    assert sync_r.exists(key("kept")) == 1  # no --delete: the stream stays


@pytest.mark.django_db
def test_import_fit_ftp_option_wins_over_the_file(tmp_path):
    make_user("rider")
    rows = [{"t": float(i), "power": 210, "heart_rate": 140, "cadence": 90, "speed": 8.0,
             "distance": 8.0 * i, "altitude": 100.0} for i in range(900)]
    path = tmp_path / "ride.fit"
    path.write_bytes(write_fit(START, rows, ftp=260))
    call_command("import_fit", str(path), "--athlete", "rider", "--ftp", "300")
    w = Workout.objects.get()
    assert w.ftp == 300 and w.intensity_factor == pytest.approx(w.normalized_power / 300)


# --- workouts API ---------------------------------------------------------------------------
@tx
async def test_workouts_list_is_newest_first_and_limited(r):
    user, token = await user_with_token("rider")
    c = AsyncClient()
    for day in (3, 1, 2):
        body = {"title": f"day {day}", "started_at": f"2026-11-0{day}T07:00:00Z", "samples": {"t": [0, 1]}}
        assert (await c.post("/api/workouts", json.dumps(body), content_type="application/json",
                             **bearer(token))).status_code == 201
    listing = (await c.get("/api/workouts?limit=2", **bearer(token))).json()
    assert listing["count"] == 3 and [w["title"] for w in listing["workouts"]] == ["day 3", "day 2"]
    rest = (await c.get("/api/workouts?limit=2&offset=2", **bearer(token))).json()
    assert [w["title"] for w in rest["workouts"]] == ["day 1"]


@tx
async def test_the_200000_sample_limit(r):
    _, token = await user_with_token("rider")
    c = AsyncClient()

    async def post(n):
        body = {"title": "long", "started_at": "2026-11-03T07:00:00Z", "samples": {"t": list(range(n))}}
        return await c.post("/api/workouts", json.dumps(body), content_type="application/json", **bearer(token))

    assert (await post(200_000)).status_code == 201
    over = await post(200_001)
    assert over.status_code == 400 and "200000" in over.json()["detail"].replace(",", "")


# --- sessions and WebSocket credentials ----------------------------------------------------
@tx
async def test_staff_session_writes_with_a_valid_csrf_token(r):
    await sync_to_async(make_user)("staff", password="pw", staff=True)
    c = AsyncClient(enforce_csrf_checks=True)
    await c.alogin(username="staff", password="pw")
    page = await c.get("/admin/")  # renders a form: sets the CSRF cookie, as for a browser
    csrf = page.cookies["csrftoken"].value
    resp = await c.post("/api/streams/desk/events", '{"x": 1}', content_type="application/json",
                        headers={"X-CSRFToken": csrf})
    assert resp.status_code == 201, resp.content


@tx
async def test_websocket_with_an_authorization_header_and_with_a_session(r, settings):
    settings.STREAMS_PUBLIC_READ = False
    user, token = await user_with_token("rider")
    await store.stream_settings_update(name="mine", actor=actor(user))
    ws = WebsocketCommunicator(ws_app(), "/ws/streams/mine/", headers=[(b"authorization", f"Bearer {token}".encode())])
    assert (await ws.connect())[0]
    try:
        await ws.send_to(text_data=json.dumps({"p": 1}))
        replies = [await ws.receive_json_from(5) for _ in range(2)]  # the ack and the entry itself
        assert any("ids" in m for m in replies) and any(m.get("data") == {"p": "1"} for m in replies)
    finally:
        await ws.disconnect()

    await sync_to_async(user.set_password)("pw")
    await user.asave()
    c = AsyncClient()
    await c.alogin(username="rider", password="pw")
    cookie = c.cookies["sessionid"].value
    ws = WebsocketCommunicator(ws_app(), "/ws/streams/mine/?from=start", headers=[(b"cookie", f"sessionid={cookie}".encode())])
    assert (await ws.connect())[0]
    try:
        assert (await ws.receive_json_from(5))["data"] == {"p": "1"}  # the session's user may read it
    finally:
        await ws.disconnect()


# --- live delivery endings --------------------------------------------------------------------
@tx
async def test_websocket_overflow_and_shutdown_frames(r, settings):
    settings.STREAMS_PUBLIC_READ = True
    settings.SSE_QUEUE_SIZE = 3
    (first,) = await store.stream_publish(name="fast", entries=[{"i": "0"}])
    ws = WebsocketCommunicator(ws_app(), "/ws/streams/fast/?from=start")
    assert (await ws.connect())[0]
    try:
        assert (await ws.receive_json_from(5))["id"] == first  # catch-up over: the rest is queued
        async with asyncio.timeout(5):
            await StreamHub.of(await redis_context()).reading("fast")
        ids = await store.stream_publish(name="fast", entries=[{"i": str(k)} for k in range(1, 20)])
        frames = []
        while True:
            out = await ws.receive_output(5)
            if out["type"] == "websocket.close":
                break
            frames.append(json.loads(out["text"]))
        assert [f["id"] for f in frames[:-1]] == ids[:3]
        assert frames[-1]["event"] == "overflow" and frames[-1]["last_event_id"] == ids[2]
        assert out["code"] == 1013  # try again later: resume (docs/api.md)
    finally:
        await ws.disconnect()

    ws = WebsocketCommunicator(ws_app(), "/ws/streams/fast/")
    assert (await ws.connect())[0]
    try:
        async with asyncio.timeout(5):
            await StreamHub.of(await redis_context()).reading("fast")
        StreamHub.of(await redis_context()).begin_shutdown()
        frame = await ws.receive_json_from(5)
        assert frame["event"] == "shutdown" and "reconnect" in frame["detail"]
        assert await ws.receive_output(5) == {"type": "websocket.close", "code": 1012}  # service restart: resume
    finally:
        await ws.disconnect()


@tx
async def test_multi_stream_resume_with_the_streams_reordered_is_400(r, settings):
    settings.STREAMS_PUBLIC_READ = True
    await store.stream_publish(name="a", entries=[{"i": "0"}])
    c = await SSEClient("/api/sse?streams=a,b&from=start").connect()
    try:
        (event,) = await c.events(1)
    finally:
        await c.close()
    resumed = await SSEClient("/api/sse?streams=a,b", headers={"Last-Event-ID": event.id}).connect()
    assert resumed.status == 200
    await resumed.close()
    reordered = await SSEClient("/api/sse?streams=b,a", headers={"Last-Event-ID": event.id}).connect()
    assert reordered.status == 400
    assert "same streams in the same order" in (await reordered.json_body())["detail"]


@tx
async def test_more_than_one_hub_reader(r, settings):
    settings.STREAMS_PUBLIC_READ = True
    settings.STREAM_HUB_KEYS_PER_READER = 2  # read when this test's hub is built, below
    hub = StreamHub.of(await redis_context())
    keys = key_layout(settings.REDIS)  # one bucket: on a cluster too, where a reader reads one bucket
    names = [n for n in (f"s{i}" for i in range(2000)) if keys.bucket(n) == keys.bucket("s0")][:5]
    clients = [await SSEClient(f"/api/streams/{n}/sse").connect() for n in names]
    try:
        async with asyncio.timeout(5):
            for n in names:
                await hub.reading(n)
        assert hub.stats().readers == 3 and hub.stats().keys == 5
        ids = {n: (await store.stream_publish(name=n, entries=[{"n": n}]))[0] for n in names}
        for n, c in zip(names, clients):
            (event,) = await c.events(1)
            assert event.id == ids[n] and event.json() == {"n": n}
    finally:
        for c in clients:
            await c.close()
    await eventually(lambda: hub.stats().readers == 0, what="idle readers retired")


async def test_drain_gives_up_after_the_grace_period(r, settings, caplog):
    from streamsite.server.lifecycle import drain_listeners

    settings.SHUTDOWN_GRACE_MS = 200
    hub = StreamHub.of(await redis_context())
    sub = await hub.subscribe(["stuck"])  # a listener that never unsubscribes
    try:
        hub.begin_shutdown()
        started = asyncio.get_running_loop().time()
        await drain_listeners()
        waited = asyncio.get_running_loop().time() - started
        assert 0.15 <= waited < 2
        assert any("1 listeners still open after the grace period" in m for m in caplog.messages)
        assert sub.end_reason == "shutdown"
    finally:
        hub.unsubscribe(sub)


# --- health ---------------------------------------------------------------------------------
@tx
async def test_readiness_fails_within_its_timeout_when_redis_hangs(r, settings):
    async def swallow(reader, writer):  # accepts and reads, never answers
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        from streams.engine.context import close_redis_context

        await close_redis_context()
        settings.REDIS = replace(settings.REDIS, url=f"redis://127.0.0.1:{port}/1", pool_min=0, blocking_pool_min=0)
        started = asyncio.get_running_loop().time()
        resp = await AsyncClient().get("/health/ready")
        elapsed = asyncio.get_running_loop().time() - started
        assert resp.status_code == 503
        assert resp.json()["checks"]["redis"]["error"] == "redis check timed out (details in the server log)"
        assert elapsed < 3  # REDIS_PING_TIMEOUT is 1 s
    finally:
        await close_redis_context()
        server.close()
        await server.wait_closed()


@tx
async def test_metrics_and_health_answer_any_host(r, settings):
    """Probes and scrapers connect by IP (through the production entry: the lean handler)."""
    by_ip = [(b"host", b"10.0.0.7:8000")]
    assert (await asgi_response(http_scope("/health/", headers=by_ip)))[0] == 200
    assert (await asgi_response(http_scope("/metrics", headers=by_ip)))[0] == 200  # from 127.0.0.1: allowed
    assert (await asgi_response(http_scope("/api/streams", headers=by_ip)))[0] == 400


# --- Prometheus ----------------------------------------------------------------------------
def readme_series() -> list[str]:
    """The `streamsite_...` series docs/monitoring.md lists after "Prometheus metrics:", up to its next heading."""
    text = (ROOT / "docs" / "monitoring.md").read_text()
    start = text.index("Prometheus metrics:")
    section = text[start:text.index("\n## ", start)]
    return sorted(set(re.findall(r"`(streamsite_[a-z_]+)", section)))


@tx
async def test_every_series_the_readme_lists_is_exported_after_traffic(r, settings):
    settings.STREAMS_PUBLIC_READ = True
    settings.DEBUG = True
    user, token = await user_with_token("rider")
    c = AsyncClient()
    await c.post("/api/streams/p/events", '{"x": 1}', content_type="application/json", **bearer(token))
    sse = await SSEClient("/api/streams/p/sse?from=start").connect()
    try:
        await sse.events(1)
    finally:
        await sse.close()
    body = (await c.get("/metrics")).content.decode()
    names = readme_series()
    assert len(names) >= 12, names
    missing = [n for n in names if not re.search(rf"^{n}(_bucket|_count|_sum|_total)?[{{ ]", body, re.M)]
    assert missing == []
