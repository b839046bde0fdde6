"""A ride from start to finish (docs/rides.md): the live snapshot follows its states, and
the ride janitor ends idle rides and archives ended ones once, with the live numbers."""

import asyncio
from dataclasses import replace

import pytest
from asgiref.sync import sync_to_async

from streams.access.identity import Actor
from streams.engine.context import close_redis_context, redis_context
from streams.store import services as store
from tests.helpers import eventually, user_with_token
from tests.streams.sse_client import SSEClient
from tests.workouts.test_ride_tracking import next_metrics, publish_all, ride_entries
from workouts.models import AthleteProfile, Workout
from workouts.rides.janitor import RideJanitor
from workouts.rides.tracking import MetricsBoard, current_metrics

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def rider(r):
    user, token = await user_with_token("rider")
    await sync_to_async(AthleteProfile.objects.create)(athlete=user, ftp=280, max_heart_rate=190)
    return user, {"Authorization": f"Bearer {token}"}, Actor(user_id=user.pk, username="rider")


async def states_until(client, last: str, timeout: float = 6) -> list[tuple]:
    """The (state, ended_reason) of each metrics event, until the state ``last``."""
    seen = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1][0] != last:
            event = await next_metrics(client, timeout=timeout)
            assert event.event == "metrics", event
            data = event.json()
            seen.append((data["state"], data["ended_reason"]))
    return seen


async def test_the_snapshot_goes_waiting_live_stale_ended(rider, settings, open_clients):
    settings.RIDE_STALE_AFTER_MS = 300
    settings.RIDE_IDLE_END_MS = 1500
    _, auth, actor = rider
    await store.stream_settings_update(name="ride", actor=actor)
    client = await SSEClient("/api/streams/ride/metrics/sse", headers=auth).connect()
    open_clients.append(client)
    first = (await next_metrics(client)).json()
    assert (first["state"], first["samples"], first["last_entry_ms"], first["connected"]) == ("waiting", 0, None, True)
    assert first["max_heart_rate"] == 190 and first["workout"] is None
    await store.stream_publish(name="ride", entries=[{"power": "200", "speed": "8.5", "distance": "12"}], actor=actor)
    seen = await states_until(client, "ended")
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == [
        ("live", None), ("stale", None), ("ended", "idle")]


async def test_an_explicit_end_shows_at_once_and_a_resume_replays_nothing(rider, open_clients):
    _, auth, actor = rider
    await store.stream_publish(name="ride", entries=[{"power": "200", "speed": "8.5", "distance": "12"}], actor=actor)
    client = await SSEClient("/api/streams/ride/metrics/sse", headers=auth).connect()
    open_clients.append(client)
    event = await next_metrics(client)
    live = event.json()
    assert (live["state"], live["speed"], live["distance"]) == ("live", 8.5, 12.0)
    resumed = await SSEClient("/api/streams/ride/metrics/sse", headers={**auth, "Last-Event-ID": event.id}).connect()
    open_clients.append(resumed)
    await store.stream_end(name="ride", actor=actor)
    for viewer in (client, resumed):
        ended = (await next_metrics(viewer)).json()
        assert (ended["state"], ended["ended_reason"], ended["samples"]) == ("ended", "owner", 1)


async def janitor() -> RideJanitor:
    found = RideJanitor.of(await redis_context())
    found.start()
    return found


async def live_numbers(name: str) -> dict:
    return await current_metrics(MetricsBoard.of(await redis_context()), name, linger=False)


def assert_like_live(workout: Workout, live: dict) -> None:
    for field, key in [("normalized_power", "normalized_power"), ("intensity_factor", "intensity_factor"),
                       ("tss", "tss")]:
        assert getattr(workout, field) == pytest.approx(live[key], rel=0.005), field


async def test_the_janitor_archives_an_explicit_end_once_with_the_stream_ftp(rider, settings):
    settings.RIDE_STALE_AFTER_MS = 500
    settings.RIDE_IDLE_END_MS = 2000  # a scan each 0.5 s
    _, _, actor = rider
    await store.stream_settings_update(name="ride", actor=actor, ftp=250)
    await publish_all("ride", ride_entries(duration=900)[1], actor)
    live = await live_numbers("ride")
    found = await janitor()
    await store.stream_end(name="ride", actor=actor)

    async def recorded():
        return (await store.stream_meta(names=["ride"]))["ride"].workout_id

    await eventually(recorded, timeout=60, what="the workout id in the metadata")
    workout = await Workout.objects.aget(pk=await recorded())
    assert (workout.ftp, workout.stream, workout.source) == (250, "ride", "stream")
    assert_like_live(workout, live)
    assert (await live_numbers("ride"))["workout"]["url"] == f"/workouts/{workout.pk}"
    scans = found.scans
    await eventually(lambda: found.scans >= scans + 2, timeout=10, what="two more scans")
    assert await Workout.objects.acount() == 1 and found.archived == 1


async def test_the_janitor_ends_an_idle_ride_and_archives_it_with_the_profile_ftp(rider, settings):
    settings.RIDE_STALE_AFTER_MS = 200
    settings.RIDE_IDLE_END_MS = 1000
    settings.RIDE_ARCHIVED_STREAM = "delete"
    _, _, actor = rider
    await publish_all("ride", ride_entries(duration=600, seed=5)[1], actor)
    live = await live_numbers("ride")
    await janitor()

    async def archived():
        return await Workout.objects.filter(stream="ride").aexists()

    await eventually(archived, timeout=60, what="the idle ride's workout")
    workout = await Workout.objects.aget(stream="ride")
    assert workout.ftp == 280
    assert_like_live(workout, live)
    await eventually(lambda: _gone("ride"), timeout=10, what="the archived stream deleted")


async def _gone(name: str) -> bool:
    return (await store.streams_exist(names=[name])) == {name: False}


async def test_a_ride_with_an_entry_after_the_idle_check_goes_on(rider, settings):
    settings.RIDE_IDLE_END_MS = 1000
    _, _, actor = rider
    await publish_all("ride", [{"power": "200"}], actor)
    seen = (await store.stream_info_batch(names=["ride"]))["ride"]
    await store.stream_publish(name="ride", entries=[{"power": "210"}], actor=actor)
    assert await store.stream_end(name="ride", reason="idle", if_last=seen.last_id) is None
    assert (await store.stream_meta(names=["ride"]))["ride"].ended_ms is None


async def test_no_janitor_runs_unless_a_server_starts_it(r):
    ctx = await redis_context()
    assert ctx.peek(RideJanitor) is None


async def test_connected_turns_false_while_redis_cannot_be_reached(doomed_redis, settings):
    url, proc = doomed_redis
    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url=url)
    actor = Actor(user_id=999_999, username="rider")
    try:
        await publish_all("ride", [{"power": "200"}], actor)
        board = MetricsBoard.of(await redis_context())
        tracker = board.acquire("ride")
        try:
            await asyncio.wait_for(asyncio.shield(tracker.ready), 5)
            assert tracker.snapshot["connected"] is True
            proc.kill()
            proc.wait(10)
            await eventually(lambda: tracker.snapshot["connected"] is False, timeout=10, what="connected false")
        finally:
            board.release(tracker)
    finally:
        await close_redis_context()




async def test_a_ride_without_a_sample_is_not_archived_and_the_janitor_goes_on(rider, settings, caplog):
    settings.RIDE_STALE_AFTER_MS = 500
    settings.RIDE_IDLE_END_MS = 2000
    _, _, actor = rider
    await store.stream_settings_update(name="empty", actor=actor)
    await store.stream_end(name="empty", actor=actor)
    found = await janitor()
    await eventually(lambda: found.scans >= 3, timeout=10, what="three scans")
    assert found.archived == 0 and await Workout.objects.acount() == 0
    assert [r.getMessage() for r in caplog.records if "not archived" in r.getMessage()] == [
        "ride 'empty' ended but is not archived: stream 'empty' has no entries"]
