"""Ended rides become workouts (docs/rides.md): the archive waits for the end (or force),
carries the stream's FTP else the profile's, and records the stream it came from."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.test import AsyncClient

from streams.models import ApiToken
from streams.store import services as store
from tests.helpers import actor, bearer, make_user
from workouts.models import AthleteProfile
from workouts.rides.archive import EntryReader

pytestmark = pytest.mark.django_db(transaction=True)
RIDE = [{"t": str(i), "power": str(200 + i % 11), "heart_rate": "140"} for i in range(120)]


@pytest.fixture
async def rider(r):
    def make():
        user = make_user("rider")
        AthleteProfile.objects.create(athlete=user, ftp=280)
        return user, ApiToken.issue(user=user)[1]

    user, token = await sync_to_async(make)()
    await store.stream_publish(name="ride", entries=RIDE, actor=actor(user))
    return user, token


async def archive(token, body):
    return await AsyncClient().post("/api/streams/ride/archive", json.dumps(body), content_type="application/json",
                                    **bearer(token))


async def test_archiving_a_ride_that_goes_on_answers_409_unless_forced(rider):
    _, token = rider
    resp = await archive(token, {})
    assert resp.status_code == 409 and "state live" in resp.json()["detail"]
    forced = await archive(token, {"force": True})
    assert forced.status_code == 201 and forced.json()["stream"] == "ride"
    assert (await store.stream_meta(names=["ride"]))["ride"].workout_id is None  # the ride goes on


async def test_an_ended_ride_is_archived_with_the_stream_ftp_and_records_its_workout(rider):
    user, token = rider
    await store.stream_settings_update(name="ride", actor=actor(user), ftp=250)
    await store.stream_end(name="ride", actor=actor(user))
    resp = await archive(token, {})
    assert resp.status_code == 201
    workout = resp.json()
    assert (workout["ftp"], workout["sample_count"], workout["stream"]) == (250, 120, "ride")
    assert (await store.stream_meta(names=["ride"]))["ride"].workout_id == workout["id"]


async def test_without_a_stream_ftp_the_archive_carries_the_profile_ftp(rider):
    user, token = rider
    await store.stream_end(name="ride", actor=actor(user))
    assert (await archive(token, {})).json()["ftp"] == 280


async def test_workouts_filter_by_the_stream_they_came_from(rider):
    user, token = rider
    await archive(token, {"force": True})
    client = AsyncClient()
    assert (await client.get("/api/workouts?stream=ride", **bearer(token))).json()["count"] == 1
    assert (await client.get("/api/workouts?stream=other", **bearer(token))).json()["count"] == 0


async def test_the_archive_command_follows_the_same_rule(rider):
    with pytest.raises(CommandError, match="state live"):
        await sync_to_async(call_command, thread_sensitive=False)("archive_stream", "ride", "--athlete", "rider")
    await sync_to_async(call_command, thread_sensitive=False)("archive_stream", "ride", "--athlete", "rider", "--force")


def test_an_end_marker_is_no_sample():
    reader = EntryReader()
    assert reader.sample("1000-0", {"power": "200"}) is not None
    assert reader.sample("2000-0", {"_end": "owner"}) is None
    assert reader.sample("3000-0", {"power": "210"})["t"] == 2.0


async def test_a_ride_timed_by_the_devices_unix_clock_starts_at_its_first_sample(r):
    """/ride/ sends ``t`` as Unix seconds: the workout starts at the first sample's time, its
    ``t`` counts from 0, and its FIT file's records carry the device's times (not 1970 + t
    added to the start: a year of 2081)."""
    from garmin_fit_sdk import Decoder, Stream

    def make():
        user = make_user("device")
        return user, ApiToken.issue(user=user)[1]

    user, token = await sync_to_async(make)()
    start = 1_764_950_400  # 2025-12-05 16:00:00 UTC
    late_first = [{"t": str(start + i), "power": str(200 + i % 7)} for i in range(30, 60)]
    backfill = [{"t": str(start + i), "power": str(200 + i % 7)} for i in range(30)]  # offline, sent after
    await store.stream_publish(name="ride", entries=late_first, actor=actor(user))
    await store.stream_publish(name="ride", entries=backfill, actor=actor(user))
    resp = await archive(token, {"force": True})
    assert resp.status_code == 201, resp.content
    workout = resp.json()
    assert workout["started_at"].startswith("2025-12-05T16:00:00")
    assert (workout["duration_s"], workout["sample_count"]) == (60, 60)
    client = AsyncClient()
    detail = (await client.get(f"/api/workouts/{workout['id']}?samples=true", **bearer(token))).json()
    assert detail["samples"]["t"] == list(range(60))  # from 0, back-fill placed first
    fit = await client.get(f"/api/workouts/{workout['id']}/fit", **bearer(token))
    messages, errors = Decoder(Stream.from_byte_array(bytearray(fit.content))).read()
    assert errors == []
    times = [m["timestamp"] for m in messages["record_mesgs"]]
    assert (times[0].isoformat(), times[-1].isoformat()) == ("2025-12-05T16:00:00+00:00", "2025-12-05T16:00:59+00:00")


async def test_the_workout_json_is_the_openapi_schema_it_names(rider):
    """Every field a workout answers is in the OpenAPI schema (WorkoutOut forbids the others):
    an archived ride with zones and W′ balance, read back every way (a planned session's laps
    and compliance: tests/workouts/test_planned_session.py)."""
    from workouts.api import ArchivedOut, WorkoutListOut, WorkoutOut

    user, token = rider
    await store.stream_end(name="ride", actor=actor(user))
    archived = (await archive(token, {"delete_stream": True})).json()
    ArchivedOut.model_validate(archived)
    client = AsyncClient()
    one = (await client.get(f"/api/workouts/{archived['id']}?samples=true", **bearer(token))).json()
    assert one["laps"] == [] and len(one["time_in_power_zones"]) == 7  # the profile's FTP: zones
    WorkoutOut.model_validate(one)
    WorkoutListOut.model_validate((await client.get("/api/workouts", **bearer(token))).json())
    schema = (await client.get("/api/openapi.json")).json()
    fields = set(schema["components"]["schemas"]["WorkoutOut"]["properties"])
    assert {"laps", "time_in_power_zones", "time_in_hr_zones", "min_w_prime_balance", "plan_compliance"} <= fields
    for path, method, status in [("/api/workouts/{workout_id}", "get", "200"), ("/api/workouts", "post", "201"),
                                 ("/api/workouts/import", "post", "201"), ("/api/streams/{name}/archive", "post", "201")]:
        assert "schema" in schema["paths"][path][method]["responses"][status]["content"]["application/json"], path
