"""'Archive this stream' on the admin's Redis streams pages: who may, the confirmation (force for
a ride that has not ended), and what the admin is told (the workout's link, an empty or missing
stream, Redis down)."""

from __future__ import annotations

import asyncio

import pytest
from django.test import Client
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.access.identity import SYSTEM
from streams.engine.context import close_redis_context
from streams.store import services as store
from tests.helpers import actor, key, logged_in, make_user, publish_sync, staff_with
from workouts.models import Workout

ARCHIVE = "/admin/redis-streams/archive/"
OLD_RIDE_MS = 1_700_000_000_000  # entries from 2023: a ride that ended by idling long ago




def old_ride(sync_r, name: str, n: int = 120) -> None:
    for i in range(n):
        sync_r.xadd(key(name), {"t": str(i), "power": str(200 + i % 50), "heart_rate": "140"}, id=f"{OLD_RIDE_MS + i * 1000}-0")


def archive(client: Client, name: str, **extra):
    return client.post(ARCHIVE, {"names": [name], "confirm": "yes", **extra}, follow=True)


def texts(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# who -> may archive (anonymous and non-staff go to the login page; staff without the
# permission and readers with view_all_streams get 403)
WHO_MAY_ARCHIVE = [
    ("anonymous", 302),
    ("staff without permission", 403),
    ("viewer (view_all_streams)", 403),
    ("manager (manage_all_streams)", 200),
    ("superuser", 200),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("who", "status"), WHO_MAY_ARCHIVE)
def test_who_may_archive_a_stream_from_the_admin(sync_r, who, status):
    old_ride(sync_r, "old-ride")
    user = {
        "anonymous": lambda: None,
        "staff without permission": lambda: staff_with("clerk"),
        "viewer (view_all_streams)": lambda: staff_with("viewer", "view_all_streams"),
        "manager (manage_all_streams)": lambda: staff_with("manager", "manage_all_streams"),
        "superuser": lambda: make_user("root", superuser=True),
    }[who]()
    response = logged_in(user).post(ARCHIVE, {"names": ["old-ride"], "confirm": "yes"})
    assert response.status_code == (302 if status == 200 else status)
    if status == 302:
        assert "/admin/login/" in response["Location"]
    assert Workout.objects.count() == (1 if status == 200 else 0)


@pytest.mark.django_db(transaction=True)
def test_archiving_asks_first_then_makes_the_workout_and_links_it(sync_r):
    old_ride(sync_r, "old-ride")
    client = logged_in(make_user("root", superuser=True))
    detail = client.get("/admin/redis-streams/old-ride/").content.decode()
    assert "Archive this stream as a workout" in detail
    confirm = client.post(ARCHIVE, {"names": ["old-ride"]})
    assert confirm.status_code == 200 and "Yes, archive" in confirm.content.decode()
    assert 'name="force"' not in confirm.content.decode()  # it ended (idle): nothing to force
    assert Workout.objects.count() == 0
    done = archive(client, "old-ride")
    workout = Workout.objects.get()
    assert workout.source == "stream" and workout.sample_count == 120 and workout.athlete.username == "root"
    [message] = texts(done)
    assert f'href="/workouts/{workout.pk}"' in message and "120 samples" in message


@pytest.mark.django_db(transaction=True)
def test_the_workout_goes_to_the_streams_owner(sync_r):
    rider = make_user("rider")
    publish_sync("owned", 30, field="power", start=150, actor=actor(rider))
    client = logged_in(make_user("root", superuser=True))
    archive(client, "owned", force="yes")
    assert Workout.objects.get().athlete == rider


@pytest.mark.django_db(transaction=True)
def test_a_ride_that_has_not_ended_needs_force(sync_r):
    publish_sync("live-now", 30, field="power", start=150)
    client = logged_in(make_user("root", superuser=True))
    confirm = client.post(ARCHIVE, {"names": ["live-now"]}).content.decode()
    assert "not ended" in confirm and 'name="force"' in confirm
    [message] = texts(archive(client, "live-now"))
    assert "has not ended" in message and Workout.objects.count() == 0
    [message] = texts(archive(client, "live-now", force="yes"))
    assert "Archived live-now" in message and Workout.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_empty_or_missing_stream_says_so(sync_r):
    async def create_empty():
        try:
            await store.stream_settings_update(name="empty", actor=SYSTEM, visibility="public")
        finally:
            await close_redis_context()

    asyncio.run(create_empty())
    client = logged_in(make_user("root", superuser=True))
    [message] = texts(archive(client, "empty"))
    assert message == "Stream 'empty' has no entries: nothing to archive."
    [message] = texts(archive(client, "nowhere"))
    assert message == "Stream 'nowhere' not found: nothing to archive."


@pytest.mark.django_db(transaction=True)
def test_redis_down_is_a_message_not_a_500(sync_r, monkeypatch):
    async def down(**kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(store, "stream_info_batch", down)
    client = logged_in(make_user("root", superuser=True))
    response = archive(client, "any")
    assert response.status_code == 200
    [message] = texts(response)
    assert message.startswith("Redis is unavailable") and "nothing was archived" in message


@pytest.mark.django_db(transaction=True)
def test_the_list_archives_the_selected_streams(sync_r):
    old_ride(sync_r, "ride-a")
    old_ride(sync_r, "ride-b", n=60)
    client = logged_in(make_user("root", superuser=True))
    listing = client.get("/admin/redis-streams/").content.decode()
    assert "Archive selected streams" in listing
    response = client.post(ARCHIVE, {"names": ["ride-a", "ride-b"], "confirm": "yes"}, follow=True)
    assert sorted(Workout.objects.values_list("sample_count", flat=True)) == [60, 120]
    assert len(texts(response)) == 2
