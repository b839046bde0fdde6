"""Live ride metrics: GET /api/streams/{name}/metrics, the metrics SSE (one stream, several),
equal to the archive's metrics, one engine per stream per process, FTP from the stream or the
athlete's profile."""

import asyncio
import json
import math

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from streams.access.identity import Actor
from streams.engine.context import redis_context
from streams.store import services as store
from tests.helpers import user_with_token
from tests.streams.sse_client import SSEClient
from workouts.metrics import ride_metrics
from workouts.models import AthleteProfile
from workouts.rides.archive import workout_from_stream
from workouts.rides.simulate import simulate_ride
from workouts.rides.tracking import MetricsBoard

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def athlete(r):
    user, token = await user_with_token("rider")
    await sync_to_async(AthleteProfile.objects.create)(athlete=user, ftp=250, weight_kg=70.0)
    return user, token, Actor(user_id=user.pk, username="rider")


def ride_entries(duration=1800, seed=2):
    """A simulated ride as stream entries (``t`` field; dropouts are entries without power)."""
    ride = simulate_ride(duration=duration, hz=1, seed=seed)
    entries = []
    for t, p, hr, cad in zip(*(ride[c].tolist() for c in ("t", "power", "heart_rate", "cadence"))):
        entry = {"t": str(t), "hr": str(hr), "cadence": str(cad)}
        if not math.isnan(p):
            entry["power"] = str(p)
        entries.append(entry)
    return ride, entries


async def publish_all(name, entries, actor, chunk=1000):
    for start in range(0, len(entries), chunk):
        await store.stream_publish(name=name, entries=entries[start : start + chunk], actor=actor)


async def get_metrics(token, name):
    response = await AsyncClient().get(f"/api/streams/{name}/metrics", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.json()


async def test_live_metrics_equal_ride_metrics_and_the_archived_workout(athlete):
    user, token, actor = athlete
    ride, entries = ride_entries()
    await publish_all("ride", entries, actor)
    status, live = await get_metrics(token, "ride")
    assert status == 200
    assert live["ftp"] == 250 and live["ftp_source"] == "profile" and live["weight_kg"] == 70.0
    assert live["samples"] == 1800 and live["last_id"] == (await store.stream_last_id(name="ride"))
    batch = ride_metrics(ride["t"], ride["power"], ride["heart_rate"], ride["cadence"], ftp=250)
    workout = await workout_from_stream(name="ride", athlete=user, force=True)  # no FTP given: the profile's
    assert workout.ftp == 250
    for live_name, expected in [
        ("normalized_power", batch.normalized_power), ("avg_power", batch.avg_power), ("tss", batch.tss),
        ("intensity_factor", batch.intensity_factor), ("avg_heart_rate", batch.avg_hr),
    ]:
        assert live[live_name] == pytest.approx(expected, rel=0.005), live_name
    for live_name, stored in [
        ("normalized_power", workout.normalized_power), ("avg_power", workout.avg_power), ("tss", workout.tss),
        ("moving_s", workout.moving_time_s), ("elapsed_s", workout.duration_s),
    ]:
        assert live[live_name] == pytest.approx(stored, rel=0.005), live_name
    assert live["power_3s"] == pytest.approx(np.nanmean(ride["power"][-3:]), rel=0.05)


async def test_stream_ftp_wins_over_the_profile(athlete, settings):
    settings.ACCESS_RECHECK_INTERVAL_MS = 10
    _, token, actor = athlete
    await publish_all("ride", ride_entries(duration=120)[1], actor)
    await store.stream_settings_update(name="ride", actor=actor, visibility=None, ftp=300)
    status, live = await get_metrics(token, "ride")
    assert (status, live["ftp"], live["ftp_source"]) == (200, 300, "stream")
    assert live["intensity_factor"] == pytest.approx(live["normalized_power"] / 300, abs=1e-3)


async def test_missing_stream_is_404_with_detail(athlete):
    _, token, _ = athlete
    status, body = await get_metrics(token, "nothing-here")
    assert status == 404 and "nothing-here" in body["detail"]
    status, body = await get_metrics(token, "bad name!")
    assert status == 400 and "detail" in body


async def next_metrics(client, timeout=5.0):
    while True:
        event = await client.next_event(timeout=timeout)
        if event.event != "message" or event.data:
            if event.event in ("metrics", "deleted", "forbidden", "shutdown", "failed"):
                return event


async def test_metrics_sse_one_engine_for_every_viewer_resumable(athlete, open_clients):
    _, token, actor = athlete
    auth = {"Authorization": f"Bearer {token}"}
    await publish_all("ride", ride_entries(duration=60)[1], actor)
    viewers = [await SSEClient("/api/streams/ride/metrics/sse", headers=auth).connect() for _ in range(3)]
    open_clients.extend(viewers)
    firsts = [await next_metrics(v) for v in viewers]
    assert all(e.event == "metrics" and e.json()["samples"] == 60 for e in firsts)
    assert firsts[0].id == await store.stream_last_id(name="ride")
    board = MetricsBoard.of(await redis_context())
    assert board.stats() == {"streams": 1, "viewers": 3}
    # A reconnect at the last id it saw gets nothing until a newer entry comes.
    resumed = await SSEClient("/api/streams/ride/metrics/sse", headers={**auth, "Last-Event-ID": firsts[0].id}).connect()
    open_clients.append(resumed)
    await store.stream_publish(name="ride", entries=[{"t": "60", "power": "400"}], actor=actor)
    event = await next_metrics(resumed)
    assert event.json()["samples"] == 61 and event.json()["power"] == 400
    assert [(await next_metrics(v)).json()["samples"] for v in viewers] == [61, 61, 61]
    await store.streams_delete(names=["ride"], actor=actor)
    assert (await next_metrics(resumed)).event == "deleted"


async def test_metrics_sse_brings_the_chart_in_ride_time(athlete, open_clients, monkeypatch):
    """The chart is ride time as the device recorded it (150 s at 4 Hz uploaded in one go is
    not squeezed into the moment it arrived): the first sample of each second, the last
    CHART_S; a connection gets all of it first, then only newer points."""
    from workouts.rides import tracking as live_metrics

    monkeypatch.setattr(live_metrics, "CHART_S", 100.0)
    _, token, actor = athlete
    auth = {"Authorization": f"Bearer {token}"}
    entries = [{"t": str(k / 4), "power": str(200 + k % 7), "hr": "150"} for k in range(600)]
    for k in range(480, 484):  # no power during the 120th second
        del entries[k]["power"]
    await publish_all("ride", entries, actor)
    c = await SSEClient("/api/streams/ride/metrics/sse", headers=auth).connect()
    open_clients.append(c)
    chart = (await next_metrics(c)).json()["chart"]
    assert [point[0] for point in chart] == list(range(49, 150))
    assert chart[0] == [49, 200 + 196 % 7, 150] and chart[120 - 49] == [120, None, 150]
    await store.stream_publish(
        name="ride", entries=[{"t": t, "power": "300", "hr": "151"} for t in ("150", "150.5", "151")], actor=actor,
    )
    newer = []
    while not newer or newer[-1][0] < 151:
        newer += (await next_metrics(c)).json()["chart"]
    assert newer == [[150, 300, 151], [151, 300, 151]]  # only what this connection had not had
    late = await SSEClient("/api/streams/ride/metrics/sse", headers=auth).connect()
    open_clients.append(late)
    assert [point[0] for point in (await next_metrics(late)).json()["chart"]] == list(range(51, 152))


async def test_a_tracker_publishes_through_a_redis_outage(doomed_redis, settings):
    """Entries arrive, then Redis goes (a failover outlasting the node map's redirect
    deadline): the tracker still publishes their snapshot, with the owner and FTP it last
    read, instead of ending its viewers with `failed`."""
    from dataclasses import replace

    from streams.engine.context import close_redis_context
    from workouts.rides.tracking import current_metrics

    url, proc = doomed_redis
    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=url)
    settings.ACCESS_RECHECK_INTERVAL_MS = 100  # the metadata copy is stale at once
    actor = Actor(user_id=999_999, username="rider")
    try:
        await store.stream_settings_update(name="ride", actor=actor, ftp=250)
        await publish_all("ride", [{"t": str(i), "power": "200"} for i in range(30)], actor)
        board = MetricsBoard.of(await redis_context())
        assert (await current_metrics(board, "ride"))["ftp"] == 250
        last_ms = int((await store.stream_last_id(name="ride")).split("-")[0])
        tracker = board.acquire("ride")
        try:
            proc.kill()
            proc.wait(10)
            changed = tracker.changed()
            tracker._add(f"{last_ms + 1000}-0", json.dumps({"t": "30", "power": "300"}))  # read just before
            await asyncio.wait_for(changed, 5)
            assert tracker.ended is None
            assert tracker.snapshot["samples"] == 31 and tracker.snapshot["ftp"] == 250
        finally:
            board.release(tracker)
    finally:
        await close_redis_context()


async def test_group_metrics_sse_one_connection_for_several_riders(athlete, open_clients):
    _, token, actor = athlete
    for name in ("a", "b"):
        await publish_all(name, ride_entries(duration=40, seed=len(name))[1], actor)
    c = await SSEClient("/api/metrics/sse?streams=a,b", headers={"Authorization": f"Bearer {token}"}).connect()
    open_clients.append(c)
    seen = {}
    while len(seen) < 2:
        event = await next_metrics(c)
        seen[event.json()["name"]] = event
    assert {n: e.json()["samples"] for n, e in seen.items()} == {"a": 40, "b": 40}
    assert "~" in seen["b"].id  # the composite id: a reconnect resumes both riders
    assert "chart" not in seen["a"].json()  # the group view draws no charts
    await store.streams_delete(names=["a"], actor=actor)
    # At once (not at the next access re-check, 5 s): the body wakes on any rider's change.
    assert (await next_metrics(c, timeout=2)).event == "deleted"
    await store.stream_publish(name="b", entries=[{"t": "100", "power": "123"}], actor=actor)
    event = await next_metrics(c, timeout=3)  # the other rider goes on
    assert event.event == "metrics" and event.json()["name"] == "b" and event.json()["samples"] == 41


async def test_tracker_ends_itself_when_nobody_views(athlete, monkeypatch):
    from workouts.rides import tracking as live_metrics

    monkeypatch.setattr(live_metrics, "LINGER_S", 0.0)
    _, token, actor = athlete
    await publish_all("ride", ride_entries(duration=30)[1], actor)
    board = MetricsBoard.of(await redis_context())
    tracker = board.acquire("ride")  # a viewer that leaves (a one-shot GET ends its tracker itself)
    await tracker.ready
    board.release(tracker)
    await asyncio.wait_for(tracker.task, timeout=5)
    assert board.stats() == {"streams": 0, "viewers": 0}
    assert json.loads(json.dumps(tracker.snapshot))["samples"] == 30


async def test_a_tracker_goes_on_without_the_profile_while_the_database_is_down(athlete, monkeypatch):
    """The athlete's profile (FTP, weight) cannot be read: the tracker publishes without it
    instead of ending every viewer with ``failed``, and the outage is the identity's one."""
    from asgiref.sync import sync_to_async as to_async

    from streams.core.database import database_outage
    from tests.streams.test_identity_outage import _refused_connection
    from workouts.rides import tracking

    monkeypatch.setattr(tracking, "_profile_of", to_async(lambda owner_id: _refused_connection()))
    _, _, actor = athlete
    await publish_all("ride", ride_entries(duration=30)[1], actor)
    board = MetricsBoard.of(await redis_context())
    tracker = board.acquire("ride")
    try:
        await asyncio.wait_for(tracker.ready, timeout=5)
        assert not tracker.finished and tracker.snapshot["samples"] == 30
        assert tracker.snapshot["ftp"] is None and database_outage.down
    finally:
        board.release(tracker)
        database_outage.reset()
