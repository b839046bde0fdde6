"""Laps (docs/rides.md: markers and laps): ``laps_from_boundaries`` against hand computations,
a workout's laps derived from its markers on every save, in its JSON and admin, and an
archived ride's markers becoming its workout's laps."""

import datetime as dt
import json

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from streams.models import ApiToken
from streams.store import services as store
from tests.helpers import actor, bearer, make_user
from workouts.metrics import laps_from_boundaries, ride_metrics
from workouts.models import Workout
from workouts.samples import samples_from_arrays
from workouts.services import workout_create, workout_save

T0 = dt.datetime(2026, 12, 1, 17, tzinfo=dt.UTC)


def np_by_hand(p1) -> float | None:
    """Coggan's NP the slow way: every full 30 s window's mean, 4th powers, mean, 4th root."""
    p1 = list(p1)
    if len(p1) < 30:
        return None
    means = [sum(p1[k : k + 30]) / 30 for k in range(len(p1) - 29)]
    return (sum(m**4 for m in means) / len(means)) ** 0.25


def three_blocks():
    """180 s at 1 Hz from t = 1000: 100 W / 120 bpm, then 200 W / 140 bpm, then 300 W / 160
    bpm, a minute each."""
    t = np.arange(1000.0, 1180.0)
    power = np.repeat([100.0, 200.0, 300.0], 60)
    hr = np.repeat([120.0, 140.0, 160.0], 60)
    return t, power, hr


def test_markers_split_a_ride_into_laps_with_their_own_numbers():
    t, power, hr = three_blocks()
    laps = laps_from_boundaries(t, power, hr, [(60, "two"), (120, "three")])
    assert [(lap["start_s"], lap["end_s"], lap["duration_s"], lap["label"]) for lap in laps] == [
        (0.0, 60.0, 60.0, None), (60.0, 120.0, 60.0, "two"), (120.0, 180.0, 60.0, "three"),
    ]
    assert [lap["avg_power"] for lap in laps] == [100.0, 200.0, 300.0]
    assert [lap["np"] for lap in laps] == pytest.approx([100.0, 200.0, 300.0])
    assert [lap["avg_hr"] for lap in laps] == pytest.approx([120.0, 140.0, 160.0])
    assert [lap["moving_s"] for lap in laps] == [60, 60, 60]


def test_a_laps_np_comes_from_its_own_full_windows_and_is_null_under_30_seconds():
    t = np.arange(0.0, 100.0)
    rng = np.random.default_rng(4)
    power = rng.uniform(0, 500, t.size).round()
    laps = laps_from_boundaries(t, power, None, [(25, "effort"), (75, "spin")])
    first, effort, spin = laps
    assert first["np"] is None and first["avg_power"] == pytest.approx(power[:25].mean())  # 25 s: no full window
    assert effort["np"] == pytest.approx(np_by_hand(power[25:75]), rel=1e-9)
    assert effort["avg_power"] == pytest.approx(power[25:75].mean())
    assert spin["np"] is None and spin["moving_s"] == 25
    assert all(lap["avg_hr"] is None for lap in laps)  # no heart rate: null, not zero


def test_boundaries_are_sorted_clamped_and_empty_laps_left_out():
    t, power, hr = three_blocks()
    laps = laps_from_boundaries(t, power, hr, [(120, "late"), (0, "start"), (60, "a"), (60, "b"), (500, "past")])
    assert [(lap["start_s"], lap["label"]) for lap in laps] == [(0.0, "start"), (60.0, "b"), (120.0, "late")]
    assert laps_from_boundaries(t, power, hr, []) == []  # no boundary: no laps
    assert laps_from_boundaries([], None, None, [(1, "x")]) == []


def test_laps_add_up_to_the_ride_and_leave_paused_time_out():
    t = np.arange(0.0, 600.0, 0.5)  # 2 Hz, with a timer pause from 200 s to 260 s
    rng = np.random.default_rng(7)
    power = rng.uniform(50, 400, t.size)
    hr = rng.uniform(100, 170, t.size)
    pauses = [(200.0, 260.0)]
    laps = laps_from_boundaries(t, power, hr, [(150, "x"), (400, "y")], pauses=pauses)
    whole = ride_metrics(t, power, hr, ftp=250, pauses=pauses)
    assert sum(lap["moving_s"] for lap in laps) == whole.moving_time_s == 540
    assert laps[1]["moving_s"] == 250 - 60  # 150-400 s less the pause
    energy = sum(lap["avg_power"] * lap["moving_s"] for lap in laps)
    assert energy / whole.moving_time_s == pytest.approx(whole.avg_power)
    assert laps[-1]["end_s"] == whole.duration_s


@pytest.mark.django_db
def test_a_workouts_laps_follow_its_markers_on_every_save():
    user = make_user("rider")
    t, power, hr = three_blocks()
    samples = samples_from_arrays(t=t, power=power, heart_rate=hr)
    workout = workout_create(athlete=user, title="blocks", started_at=T0, samples=samples)
    assert workout.markers == [] and workout.laps == []
    workout = Workout.objects.get(pk=workout.pk)
    workout.markers = [[120.0, "three"]]
    workout_save(workout)
    stored = Workout.objects.get(pk=workout.pk)
    assert [(lap["start_s"], lap["avg_power"], lap["label"]) for lap in stored.laps] == [
        (0.0, 150.0, None), (120.0, 300.0, "three"),
    ]


@pytest.mark.django_db(transaction=True)
async def test_the_workout_api_takes_markers_and_answers_laps(r):
    user = await sync_to_async(make_user)("rider")
    token = await sync_to_async(lambda: ApiToken.issue(user=user)[1])()
    t, power, hr = three_blocks()
    body = {"title": "blocks", "started_at": T0.isoformat(), "markers": [[60, "two"], [120, " three "]],
            "samples": {"t": t.tolist(), "power": power.tolist(), "heart_rate": hr.tolist()}}
    created = await AsyncClient().post("/api/workouts", json.dumps(body), content_type="application/json",
                                       **bearer(token))
    assert created.status_code == 201, created.json()
    out = created.json()
    assert out["markers"] == [[60.0, "two"], [120.0, "three"]]
    assert [(lap["label"], lap["avg_power"], lap["avg_hr"]) for lap in out["laps"]] == [
        (None, 100.0, 120.0), ("two", 200.0, 140.0), ("three", 300.0, 160.0),
    ]
    again = await AsyncClient().get(f"/api/workouts/{out['id']}", **bearer(token))
    assert again.json()["laps"] == out["laps"]


@pytest.mark.parametrize("markers,says", [
    ({"a": 1}, "markers must be a list"),
    ([[1]], "markers[0] must be a [ride_s, label] pair"),
    ([[-1, "x"]], "ride_s must be a number"),
    ([["5", "x"]], "ride_s must be a number"),
    ([[5, "x" * 81]], "longer than 80"),
    ([[5, 7]], "must be a string"),
])
@pytest.mark.django_db(transaction=True)
async def test_bad_markers_are_a_400_naming_them(r, markers, says):
    user = await sync_to_async(make_user)("rider")
    token = await sync_to_async(lambda: ApiToken.issue(user=user)[1])()
    body = {"title": "x", "started_at": T0.isoformat(), "markers": markers, "samples": {"t": [0, 1]}}
    response = await AsyncClient().post("/api/workouts", json.dumps(body), content_type="application/json",
                                        **bearer(token))
    assert response.status_code == 400 and says in response.json()["detail"], response.json()


@pytest.mark.django_db
def test_the_admin_edits_markers_and_shows_the_laps():
    admin = make_user("root", password="pw", superuser=True)
    t, power, hr = three_blocks()
    workout = workout_create(athlete=admin, title="blocks", started_at=T0,
                             samples=samples_from_arrays(t=t, power=power, heart_rate=hr))
    client = Client()
    client.force_login(admin)
    url = f"/admin/workouts/workout/{workout.pk}/change/"
    form = {"title": "blocks", "athlete": admin.pk, "started_at_0": "2026-12-01", "started_at_1": "17:00:00",
            "sport": "cycling", "ftp": "", "source": "api", "notes": "", "pauses": "[]",
            "markers": '[[60, "two"]]'}
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert [lap["label"] for lap in Workout.objects.get(pk=workout.pk).laps] == [None, "two"]
    page = client.get(url).content.decode()
    assert 'class="workout-laps"' in page and "two" in page and "200 W" in page
    bad = client.post(url, {**form, "markers": '[[60, "x"], [-5, "y"]]'})
    assert bad.status_code == 200 and "ride_s must be a number" in bad.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_an_archived_rides_markers_become_its_workouts_laps(r):
    user = await sync_to_async(make_user)("rider")
    token = await sync_to_async(lambda: ApiToken.issue(user=user)[1])()
    power = [100.0 + (i % 13) * 10 for i in range(120)]
    entries = [{"t": str(i), "power": str(power[i]), "hr": str(120 + i // 60 * 20)} for i in range(120)]
    await store.stream_publish(name="ride", entries=entries[:60], actor=actor(user))
    client = AsyncClient()
    marked = await client.post("/api/streams/ride/markers", json.dumps({"label": "effort"}),
                               content_type="application/json", **bearer(token))
    assert marked.status_code == 201
    ride_s = marked.json()["ride_s"]
    await store.stream_publish(name="ride", entries=entries[60:], actor=actor(user))
    await store.stream_end(name="ride", actor=actor(user))
    archived = await client.post("/api/streams/ride/archive", "{}", content_type="application/json", **bearer(token))
    assert archived.status_code == 201, archived.json()
    out = archived.json()
    assert out["markers"] == [[ride_s, "effort"]] and out["sample_count"] == 120  # the marker is no sample
    first, second = out["laps"]
    inside = [p for i, p in enumerate(power) if i < ride_s]  # each second in the lap it starts in
    assert (first["end_s"], second["start_s"], second["label"]) == (ride_s, ride_s, "effort")
    assert first["avg_power"] == pytest.approx(np.mean(inside))
    assert second["avg_power"] == pytest.approx(np.mean(power[len(inside):]))
    assert first["np"] == pytest.approx(np_by_hand(inside))
