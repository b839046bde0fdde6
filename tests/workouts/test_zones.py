"""Training zones: Coggan's seven power zones from FTP and five heart-rate zones from max heart
rate, their boundaries, time in each by hand (batch, live, on the stored workout and in its
JSON), and the live snapshot's zones and W′ balance through GET /api/streams/{name}/metrics."""

import datetime as dt

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client

from streams.access.identity import Actor
from streams.store import services as store
from tests.helpers import make_user, user_with_token
from workouts import metrics as M
from workouts.models import AthleteProfile, Workout
from workouts.physiology import Physiology, hr_zone, power_zone
from workouts.rides.archive import workout_from_stream
from workouts.rides.simulate import simulate_ride
from workouts.samples import samples_from_columns
from workouts.services import workout_create

START = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("watts, zone", [
    (0, 1), (109.9, 1), (110, 2),  # 55% of 200 W is zone 2
    (150, 2), (150.2, 3),  # 75% is still zone 2
    (180, 3), (180.2, 4), (210, 4), (210.2, 5), (240, 5), (240.2, 6), (300, 6), (300.2, 7), (2000, 7),
])
def test_power_zone_boundaries_at_ftp_200(watts, zone):
    assert power_zone(watts, 200) == zone


@pytest.mark.parametrize("bpm, zone", [
    (40, 1), (99, 1), (100, 1), (119.9, 1), (120, 2), (139.9, 2), (140, 3), (160, 4), (179.9, 4), (180, 5),
    (200, 5), (215, 5),
])
def test_hr_zone_boundaries_at_max_200(bpm, zone):
    assert hr_zone(bpm, 200) == zone


def test_boundaries_hold_for_ftps_whose_shares_round_badly():
    for ftp in (247, 251, 263, 299, 333):
        assert power_zone(0.55 * ftp, ftp) == 2 and power_zone(0.75 * ftp, ftp) == 2
        assert power_zone(1.05 * ftp, ftp) == 4 and power_zone(1.5 * ftp, ftp) == 6


def test_no_ftp_or_no_max_hr_or_no_value_is_no_zone():
    assert power_zone(200, None) is None and power_zone(None, 250) is None and power_zone(float("nan"), 250) is None
    assert hr_zone(150, None) is None and hr_zone(float("nan"), 190) is None


def hand_ride():
    """1 Hz: 10 s at 100 W (Z1 of FTP 200), 20 s at 110 W (Z2), 5 s at 300 W (Z6), 5 s at 301 W
    (Z7); heart rate 90 (Z1 of max 200), 130 (Z2), 185 (Z5) for 10, 20, 10 samples."""
    t = np.arange(40.0)
    p = np.array([100.0] * 10 + [110.0] * 20 + [300.0] * 5 + [301.0] * 5)
    hr = np.array([90.0] * 10 + [130.0] * 20 + [185.0] * 10)
    return t, p, hr


def test_time_in_zones_by_hand_batch_and_live():
    t, p, hr = hand_ride()
    metrics = M.ride_metrics(t, p, hr, ftp=200, max_heart_rate=200)
    assert metrics.time_in_power_zones == [10, 20, 0, 0, 0, 5, 5]
    assert metrics.time_in_hr_zones == [10, 20, 0, 0, 10]
    ride = M.LiveRide(physiology=Physiology(ftp=200, max_heart_rate=200))
    for row in zip(t, p, hr):
        ride.push(*row)
    snap = ride.snapshot()
    assert snap["time_in_power_zones"] == [10, 20, 0, 0, 0, 5, 5]
    assert snap["time_in_hr_zones"] == [10, 20, 0, 0, 10]
    assert snap["power_zone"] == 7  # 3 s power 301 W
    assert snap["hr_zone"] == 5


def test_time_in_zones_leaves_out_pauses_and_caps_gaps():
    t = np.concatenate([np.arange(20.0), 100 + np.arange(10.0)])  # an 81 s gap: holds at most 25 s
    p = np.full(30, 100.0)
    hr = np.full(30, 130.0)
    metrics = M.ride_metrics(t, p, hr, ftp=200, max_heart_rate=200, pauses=[(5, 10)])
    assert metrics.time_in_power_zones == [25, 0, 0, 0, 0, 0, 0]  # 30 moving seconds less 5 paused
    assert metrics.time_in_hr_zones == [0, 19 + 25 + 10 - 5, 0, 0, 0]  # the gap's sample holds 25 s


def test_without_ftp_or_max_hr_the_zones_are_none():
    t, p, hr = hand_ride()
    metrics = M.ride_metrics(t, p, hr)
    assert metrics.time_in_power_zones is None and metrics.time_in_hr_zones is None
    ride = M.LiveRide()
    for row in zip(t, p, hr):
        ride.push(*row)
    snap = ride.snapshot()
    assert snap["power_zone"] is None and snap["hr_zone"] is None
    assert snap["time_in_power_zones"] is None and snap["time_in_hr_zones"] is None


@pytest.mark.parametrize("cut", [1, 31, 2000, 3599])
def test_live_zones_equal_the_batch_on_a_ride_with_dropouts_and_a_gap(cut):
    ride = simulate_ride(duration=3600, hz=1, seed=7)
    t = ride["t"].copy()
    t[2000:] += 90
    s = slice(0, cut)
    body = Physiology(ftp=250, critical_power=260, w_prime=18_000, max_heart_rate=190)
    batch = M.ride_metrics(t[s], ride["power"][s], ride["heart_rate"][s], ftp=250, critical_power=260, w_prime=18_000,
                           max_heart_rate=190)
    live = M.LiveRide(physiology=body)
    for row in zip(t[s].tolist(), ride["power"][s].tolist(), ride["heart_rate"][s].tolist()):
        live.push(*row)
    snap = live.snapshot()
    assert snap["time_in_power_zones"] == batch.time_in_power_zones
    assert snap["time_in_hr_zones"] == pytest.approx(batch.time_in_hr_zones, rel=1e-9)
    assert sum(snap["time_in_power_zones"]) == snap["moving_s"]
    if batch.min_w_prime_balance is not None:
        assert snap["min_w_prime_balance"] == pytest.approx(batch.min_w_prime_balance, rel=1e-9)
        assert snap["w_prime_below_25_s"] == batch.w_prime_below_25_s


@pytest.mark.django_db(transaction=True)
async def test_the_workout_stores_time_in_zones_and_its_json_names_them():
    user, token = await user_with_token("rider")
    await sync_to_async(AthleteProfile.objects.create)(athlete=user, ftp=200, max_heart_rate=200)
    t, p, hr = hand_ride()
    columns = {"t": t.tolist(), "power": p.tolist(), "heart_rate": hr.tolist()}
    workout = await sync_to_async(workout_create)(
        athlete=user, title="zones", started_at=START, samples=samples_from_columns(columns)
    )
    stored = await Workout.objects.aget(pk=workout.pk)
    assert stored.time_in_power_zones == [10, 20, 0, 0, 0, 5, 5]
    assert stored.time_in_hr_zones == [10, 20, 0, 0, 10]
    # CP = FTP = 200 W: the 5 s at 300 W and 5 s at 301 W spend 500 + 505 J
    assert stored.max_heart_rate == 200 and stored.min_w_prime_balance == pytest.approx(20_000 - 500 - 505)
    body = (await AsyncClient().get(f"/api/workouts/{workout.pk}", headers={"Authorization": f"Bearer {token}"})).json()
    assert body["time_in_power_zones"] == [10, 20, 0, 0, 0, 5, 5]
    assert body["time_in_hr_zones"] == [10, 20, 0, 0, 10]
    assert body["min_w_prime_balance"] == pytest.approx(stored.min_w_prime_balance)
    assert body["w_prime_below_25_s"] == 0
    assert (body["critical_power"], body["w_prime"], body["max_heart_rate"], body["ftp"]) == (None, None, 200, 200)


def test_a_workout_without_profile_has_null_zones_and_w_prime(db):
    rider = get_user_model().objects.create_user("bare", password="pw")
    t, p, hr = hand_ride()
    columns = {"t": t.tolist(), "power": p.tolist(), "heart_rate": hr.tolist()}
    w = workout_create(athlete=rider, title="bare", started_at=START, samples=samples_from_columns(columns))
    w.refresh_from_db()
    assert (w.time_in_power_zones, w.time_in_hr_zones, w.min_w_prime_balance, w.w_prime_below_25_s) == (
        None, None, None, None)


# --- live, through the API ----------------------------------------------------------------
async def publish(name, rows, actor):
    entries = [{"t": str(t), "power": str(p), "hr": str(h)} for t, p, h in rows]
    await store.stream_publish(name=name, entries=entries, actor=actor)


async def get_metrics(token, name):
    response = await AsyncClient().get(f"/api/streams/{name}/metrics", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.json()


@pytest.mark.django_db(transaction=True)
async def test_the_metrics_snapshot_has_w_prime_balance_and_zones(r):
    user, token = await user_with_token("rider")
    actor = Actor(user_id=user.pk, username="rider")
    await sync_to_async(AthleteProfile.objects.create)(
        athlete=user, ftp=200, critical_power=250, w_prime=20_000, max_heart_rate=200
    )
    # 60 s at 300 W and 150 bpm: 50 W over CP for 60 s; 150% of FTP (Z6); 75% of max HR (Z3).
    await publish("ride", [(t, 300, 150) for t in range(60)], actor)
    status, live = await get_metrics(token, "ride")
    assert status == 200
    assert live["w_prime_balance"] == pytest.approx(20_000 - 60 * 50)
    assert (live["critical_power"], live["w_prime"]) == (250, 20_000)
    assert live["power_zone"] == 6 and live["hr_zone"] == 3
    assert live["time_in_power_zones"] == [0, 0, 0, 0, 0, 60, 0]
    assert live["time_in_hr_zones"] == [0, 0, 60, 0, 0]
    assert live["min_w_prime_balance"] == pytest.approx(17_000) and live["w_prime_below_25_s"] == 0
    workout = await workout_from_stream(name="ride", athlete=user, force=True)
    assert workout.min_w_prime_balance == pytest.approx(live["min_w_prime_balance"], rel=0.01)
    assert workout.time_in_power_zones == live["time_in_power_zones"]
    assert workout.time_in_hr_zones == live["time_in_hr_zones"]


@pytest.mark.django_db(transaction=True)
async def test_the_streams_ftp_gives_the_zones_and_cp_and_no_profile_gives_nulls(r):
    user, token = await user_with_token("rider")
    actor = Actor(user_id=user.pk, username="rider")
    await publish("ride", [(t, 300, 150) for t in range(10)], actor)
    status, live = await get_metrics(token, "ride")
    assert status == 200
    assert live["w_prime_balance"] is None and live["critical_power"] is None
    assert live["power_zone"] is None and live["hr_zone"] is None
    assert live["time_in_power_zones"] is None and live["time_in_hr_zones"] is None
    await store.stream_settings_update(name="ride", actor=actor, visibility=None, ftp=280)
    status, live = await get_metrics(token, "ride")  # a new tracker: the stream's FTP from the start
    assert live["power_zone"] == 5  # 300 W is 107% of 280 W
    assert live["time_in_power_zones"] == [0, 0, 0, 0, 10, 0, 0]
    assert live["w_prime_balance"] == pytest.approx(20_000 - 10 * 20)  # CP = the FTP, W′ = 20 kJ


# --- shown to people ------------------------------------------------------------------------
def test_the_admin_shows_w_prime_and_zones_rounded_with_units(transactional_db):  # the workout page closes old connections
    rider = get_user_model().objects.create_user("anna", password="pw")
    AthleteProfile.objects.create(athlete=rider, ftp=200, max_heart_rate=200)
    t, p, hr = hand_ride()
    columns = {"t": t.tolist(), "power": p.tolist(), "heart_rate": hr.tolist()}
    w = workout_create(athlete=rider, title="zones", started_at=START, samples=samples_from_columns(columns))
    root = make_user("root", superuser=True)
    client = Client()
    client.force_login(root)
    listing = client.get("/admin/workouts/workout/").content.decode()
    assert "Min W′bal" in listing and "19.0 kJ" in listing  # 18,995 J
    html = client.get(f"/admin/workouts/workout/{w.pk}/change/").content.decode()
    for label, value in (("CP", "200 W"), ("W′", "20.0 kJ"), ("Min W′ balance", "19.0 kJ"), ("Z2 endurance", "0:20"),
                         ("Z7 neuromuscular", "0:05"), ("HR Z5", "0:10")):
        assert f'<th scope="row">{label}</th><td>{value}</td>' in html, label
    assert "FTP (no CP set)" in html and "55-75% of FTP, 50%" in html
    page = client.get(f"/workouts/{w.pk}").content.decode()
    assert 'id="zones"' in page and "Z6 anaerobic" in page
    profiles = client.get("/admin/workouts/athleteprofile/add/").content.decode()
    assert "CP = FTP, W′ = 20,000 J" in profiles  # the defaults, in the help text
