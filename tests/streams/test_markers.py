"""Markers on a ride (docs/rides.md, docs/security.md): ``POST /api/streams/{name}/markers``
writes a marker entry at the ride's current second, ``GET`` lists them; who may (the owner, a
manager, a viewer whose share grants markers), bad input, an ended ride; a marker is no sample
(no live metric moves) and the live snapshot carries it."""

import json
import math

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from streams.access.identity import Actor
from streams.engine.context import redis_context
from streams.models import ApiToken, Share
from streams.store import services as store
from streams.store.names import MARKER_FIELD, RIDE_S_FIELD
from tests.helpers import make_user, user_with_token
from workouts.rides.archive import EntryReader
from workouts.rides.states import entry_ms
from workouts.rides.tracking import MetricsBoard, current_metrics

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def people(r, settings):
    """``owner`` rides ``ride`` (private, a minute of samples with ``t``); ``coach`` holds a
    share that grants markers, ``viewer`` one that does not; ``other`` holds none."""
    settings.STREAMS_PUBLIC_READ = False
    owner, owner_token = await user_with_token("owner")

    def make():
        users = {name: make_user(name) for name in ("coach", "viewer", "other")}
        Share.objects.create(owner=owner, viewer=users["coach"], may_mark=True)
        Share.objects.create(owner=owner, viewer=users["viewer"])
        tokens = {name: ApiToken.issue(user=user)[1] for name, user in users.items()}
        tokens["coach-read"] = ApiToken.issue(user=users["coach"], scopes=["read"])[1]
        return users, tokens

    users, tokens = await sync_to_async(make)()
    tokens["owner"] = owner_token
    actor = Actor(user_id=owner.pk, username="owner")
    await store.stream_publish(name="ride", entries=[{"t": str(i), "power": str(200 + i % 7), "hr": "140"}
                                                    for i in range(60)], actor=actor)
    return {**users, "owner": owner}, tokens, actor


async def mark(tokens, role, name="ride", body=None, raw=None):
    headers = {} if role == "anonymous" else {"Authorization": f"Bearer {tokens[role]}"}
    data = raw if raw is not None else json.dumps({"label": "interval 1"} if body is None else body)
    return await AsyncClient().post(f"/api/streams/{name}/markers", data=data, content_type="application/json",
                                    headers=headers)


async def listed(tokens, role, name="ride"):
    headers = {} if role == "anonymous" else {"Authorization": f"Bearer {tokens[role]}"}
    return await AsyncClient().get(f"/api/streams/{name}/markers", headers=headers)


async def last_sample_id(name):
    return next(e.id for e in await store.stream_latest(name=name, count=10) if MARKER_FIELD not in e.data)


async def test_a_marker_is_an_entry_at_the_rides_current_second_and_is_listed(people):
    _, tokens, _ = people
    sample_id = await last_sample_id("ride")
    response = await mark(tokens, "owner", body={"label": "  interval 1  "})
    assert response.status_code == 201, response.json()
    out = response.json()
    assert out["label"] == "interval 1"
    # Ride time of the newest sample (t = 59, the first t = 0) plus the time since its entry,
    # by the clock of the entry ids.
    expected = 59 + (entry_ms(out["id"]) - entry_ms(sample_id)) / 1000
    assert out["ride_s"] == pytest.approx(expected, abs=0.0015)
    (entry,) = await store.stream_range(name="ride", start=out["id"], end=out["id"])
    assert entry.data == {MARKER_FIELD: "interval 1", RIDE_S_FIELD: f"{out['ride_s']:.3f}"}
    second = (await mark(tokens, "owner", body={"label": "interval 2"})).json()
    body = (await listed(tokens, "owner")).json()
    assert body == {"name": "ride", "markers": [out, second]}


async def test_a_ride_timed_by_its_entry_ids_marks_the_seconds_since_its_first_entry(people):
    _, tokens, actor = people
    await store.stream_publish(name="no-t", entries=[{"power": "100"}], actor=actor)
    first = (await store.stream_range(name="no-t"))[0].id
    await store.stream_publish(name="no-t", entries=[{"power": "110"}], actor=actor)
    out = (await mark(tokens, "owner", name="no-t")).json()
    assert out["ride_s"] == pytest.approx((entry_ms(out["id"]) - entry_ms(first)) / 1000, abs=0.0015)


async def test_a_stream_without_a_sample_marks_ride_second_zero(people):
    _, tokens, actor = people
    await store.stream_settings_update(name="empty", actor=actor)
    out = (await mark(tokens, "owner", name="empty")).json()
    assert out["ride_s"] == 0.0


@pytest.mark.parametrize("body,says", [
    ({}, "label"),
    ({"label": ""}, "label must be 1-80"),
    ({"label": "   "}, "label must be 1-80"),
    ({"label": "x" * 81}, "label must be 1-80"),
    ({"label": 12}, "label"),
    ({"label": "a\x00b"}, "NUL"),
])
async def test_a_bad_label_is_a_400_naming_it(people, body, says):
    _, tokens, _ = people
    response = await mark(tokens, "owner", body=body)
    assert response.status_code == 400 and says in response.json()["detail"], response.json()
    assert (await listed(tokens, "owner")).json()["markers"] == []


async def test_a_body_that_is_no_json_is_a_400(people):
    _, tokens, _ = people
    response = await mark(tokens, "owner", raw="{label")
    assert response.status_code == 400 and "detail" in response.json()


async def test_the_longest_label_is_kept_whole(people):
    _, tokens, _ = people
    label = "ü" * 80
    assert (await mark(tokens, "owner", body={"label": label})).json()["label"] == label
    assert (await listed(tokens, "owner")).json()["markers"][0]["label"] == label


@pytest.mark.parametrize("role,status", [
    ("anonymous", 401), ("owner", 201), ("coach", 201), ("coach-read", 403), ("viewer", 403), ("other", 404),
])
async def test_who_may_mark_a_private_ride(people, role, status):
    _, tokens, _ = people
    response = await mark(tokens, role)
    assert response.status_code == status, response.json()
    if status == 403 and role == "viewer":
        assert "share grants markers" in response.json()["detail"]
    if status == 403 and role == "coach-read":
        assert "'publish'" in response.json()["detail"]
    readers = {"owner": 200, "coach": 200, "coach-read": 200, "viewer": 200, "other": 404, "anonymous": 404}
    assert (await listed(tokens, role)).status_code == readers[role]


async def test_a_share_grants_markers_through_the_share_api_and_revoking_it_takes_them(people):
    users, tokens, _ = people
    auth = {"Authorization": f"Bearer {tokens['owner']}"}
    client = AsyncClient()
    assert (await client.delete("/api/shares/viewer", headers=auth)).status_code == 204
    created = await client.post("/api/shares", data=json.dumps({"viewer": "viewer", "may_mark": True}),
                                content_type="application/json", headers=auth)
    assert created.status_code == 201 and created.json()["may_mark"] is True
    given = (await client.get("/api/shares", headers=auth)).json()["given"]
    assert {s["viewer"]: s["may_mark"] for s in given} == {"coach": True, "viewer": True}
    assert (await mark(tokens, "viewer")).status_code == 201
    assert (await client.delete("/api/shares/coach", headers=auth)).status_code == 204
    assert (await mark(tokens, "coach")).status_code == 404  # private, and no longer shared


async def test_a_missing_stream_is_404_and_an_ended_ride_409(people):
    _, tokens, _ = people
    assert (await mark(tokens, "owner", name="nothing")).status_code == 404
    assert (await listed(tokens, "owner", name="nothing")).status_code == 404
    await store.stream_end(name="ride", actor=Actor(user_id=people[0]["owner"].pk, username="owner"))
    response = await mark(tokens, "owner")
    assert response.status_code == 409 and "ended" in response.json()["detail"]
    assert (await mark(tokens, "coach")).status_code == 409


async def test_a_ride_takes_at_most_max_markers(people, monkeypatch):
    _, tokens, _ = people
    monkeypatch.setattr(store, "MAX_MARKERS", 2)
    assert [(await mark(tokens, "owner")).status_code for _ in range(2)] == [201, 201]
    response = await mark(tokens, "owner")
    assert response.status_code == 409 and "2 markers" in response.json()["detail"]


async def test_the_marker_script_refuses_a_stream_that_changed_hands(people):
    users, _, _ = people
    with pytest.raises(store.WriteRefused):
        await store.stream_mark(name="ride", label="x", owner_id=users["other"].pk, clock=None)
    assert await store.stream_markers(name="ride") == []


async def test_a_marker_changes_no_metric_and_the_snapshot_carries_it(people):
    _, tokens, _ = people
    board = MetricsBoard.of(await redis_context())
    before = dict(await current_metrics(board, "ride"))
    out = (await mark(tokens, "owner", body={"label": "sprint"})).json()
    tracker = board.acquire("ride")
    try:
        while tracker.snapshot["last_id"] != out["id"]:
            await tracker.changed()
        after = tracker.snapshot
    finally:
        board.release(tracker)
    assert after["markers"] == [{"label": "sprint", "ride_s": out["ride_s"]}]
    assert before["markers"] == [] and before["samples"] == after["samples"] == 60
    moved = [k for k in before if k not in ("last_id", "last_entry_ms", "markers") and before[k] != after[k]]
    assert moved == []


def test_the_entry_reader_takes_no_sample_and_no_time_from_a_marker():
    reader = EntryReader()
    assert reader.sample("1000-0", {MARKER_FIELD: "warm-up", RIDE_S_FIELD: "0.000"}) is None
    assert reader.first_ms is None  # the first sample's entry still starts the ride's time
    assert reader.sample("3000-0", {"power": "200"})["t"] == 0.0
    assert reader.sample("4000-0", {MARKER_FIELD: "x", RIDE_S_FIELD: "1.0"}) is None
    assert reader.sample("5000-0", {"power": "210"})["t"] == 2.0
    assert math.isnan(reader.sample("6000-0", {"hr": "150"})["power"])
