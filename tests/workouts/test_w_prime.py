"""W′ balance (Skiba's differential form): the step by hand, the defaults, and two reference
rides read from FIT files (one written here with pauses and gaps, one a real head unit's),
where the batch metrics and the live engine both equal the formula computed here in a plain
loop, at every second (within 1%)."""

import datetime as dt
import math

import numpy as np
import pytest
from django.contrib.auth import get_user_model

from tests.workouts.fitwriter import write_fit
from tests.workouts.test_fit_export import HEAD_UNIT
from workouts import metrics as M
from workouts.fit import read_fit
from workouts.models import AthleteProfile
from workouts.physiology import DEFAULT_W_PRIME_J, Physiology, WPrimeBalance, w_prime_rest, w_prime_step
from workouts.services import workout_from_fit

START = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
CP, W_PRIME = 250.0, 20_000.0
PAUSE = (1500, 1620)  # a timer pause, no records in it
GAP = (2400, 2460)  # no records and no timer event: a gap longer than 25 s


def test_a_second_above_cp_spends_and_below_recovers_by_hand():
    assert w_prime_step(20_000, 300, CP, W_PRIME) == 19_950  # 50 J over CP
    # (W′ − W′bal)·(CP − P)/W′ = 500 · 100 / 20,000 = 2.5 J
    assert w_prime_step(19_500, 150, CP, W_PRIME) == pytest.approx(19_502.5)
    assert w_prime_step(20_000, 100, CP, W_PRIME) == 20_000  # full stays full
    assert w_prime_step(19_999, 0, 30_000, W_PRIME) == 20_000  # capped at W′
    assert w_prime_step(100, 400, CP, W_PRIME) == -50  # may go below zero


def test_rest_is_the_zero_watt_step_once_a_second_in_closed_form():
    balance = 5_000.0
    for _ in range(90):
        balance = w_prime_step(balance, 0, CP, W_PRIME)
    assert w_prime_rest(5_000.0, 90, CP, W_PRIME) == pytest.approx(balance, rel=1e-12)
    assert w_prime_rest(5_000.0, 0, CP, W_PRIME) == 5_000.0


def test_ten_seconds_at_300_then_one_at_150_on_the_batch_and_live_forms():
    t = np.arange(11.0)
    p = np.array([300.0] * 10 + [150.0])
    metrics = M.ride_metrics(t, p, critical_power=CP, w_prime=W_PRIME)
    assert metrics.min_w_prime_balance == pytest.approx(19_500)
    assert metrics.w_prime_below_25_s == 0
    ride = M.LiveRide(physiology=Physiology(critical_power=CP, w_prime=W_PRIME))
    for k in range(11):
        ride.push(t[k], p[k])
    snap = ride.snapshot()
    assert snap["w_prime_balance"] == pytest.approx(19_502.5)
    assert snap["min_w_prime_balance"] == pytest.approx(19_500)


def test_defaults_cp_is_ftp_w_prime_20_kj_and_none_without_both():
    assert Physiology(ftp=240).cp_and_w_prime() == (240.0, DEFAULT_W_PRIME_J)
    assert Physiology(ftp=240, critical_power=260, w_prime=15_000).cp_and_w_prime() == (260.0, 15_000.0)
    assert Physiology(critical_power=260).cp_and_w_prime() == (260.0, DEFAULT_W_PRIME_J)
    assert Physiology(w_prime=15_000).cp_and_w_prime() is None
    t, p = np.arange(60.0), np.full(60, 400.0)
    with_ftp = M.ride_metrics(t, p, ftp=300)
    assert with_ftp.min_w_prime_balance == pytest.approx(DEFAULT_W_PRIME_J - 60 * 100)
    bare = M.ride_metrics(t, p)
    assert bare.min_w_prime_balance is None and bare.w_prime_below_25_s is None
    ride = M.LiveRide()
    ride.push(0, 400.0)
    assert ride.snapshot()["w_prime_balance"] is None


# --- the reference ride --------------------------------------------------------------------
def reference_rows() -> list[dict]:
    """45 minutes: warm-up, six times 150 s at 320 W / 120 s at 120 W (W′ runs low), a timer
    pause and a gap with no records, a cool-down; seeded noise, heart rate."""
    rng = np.random.default_rng(24)
    rows = []
    for t in range(2700):
        if PAUSE[0] <= t < PAUSE[1] or GAP[0] <= t < GAP[1]:
            continue
        if 300 <= t < 300 + 6 * 270:
            base = 320 if (t - 300) % 270 < 150 else 120
        else:
            base = 180
        power = max(0, int(round(base + rng.normal(0, 15))))
        rows.append({"t": t, "power": power, "heart_rate": 120 + int(power / 8)})
    return rows


@pytest.fixture(scope="module")
def reference_fit() -> bytes:
    return write_fit(START, reference_rows(), ftp=260, timer=[("stop", PAUSE[0]), ("start", PAUSE[1])])


def skiba_by_hand(times, powers, cp, w_prime) -> list[float]:
    """The formula, written out: one step per second of 1 Hz power; each second without a
    record (a pause, a gap) is a second at 0 W."""
    balance, out, previous = w_prime, [], None
    for t, p in zip(times, powers):
        if previous is not None:
            for _ in range(int(round(t - previous)) - 1):
                balance = balance + (w_prime - balance) * (cp - 0) / w_prime
        if p > cp:
            balance = balance - (p - cp)
        else:
            balance = min(w_prime, balance + (w_prime - balance) * (cp - p) / w_prime)
        out.append(balance)
        previous = t
    return out


def assert_within_1pct(actual, expected, where):
    assert abs(actual - expected) <= 0.01 * abs(expected) + 1e-6, f"{where}: {actual} != {expected}"


# The reference rides: (the FIT file, the rider's CP, its timer pauses). The head unit's is a
# real 78 min ride (Garmin Edge 810, Vector pedals; tests/workouts/data/README.md) at 275 W
# on average: with CP 320 W its W′ runs under 25% for 27 s.
REFERENCES = {
    "synthetic": lambda: (write_fit(START, reference_rows(), ftp=260, timer=[("stop", PAUSE[0]), ("start", PAUSE[1])]),
                          CP, [PAUSE]),
    "edge810-vector": lambda: (HEAD_UNIT.read_bytes(), 320.0, []),
}


@pytest.mark.parametrize("which", REFERENCES)
def test_reference_ride_batch_and_live_equal_the_formula_every_second(which):
    data, cp, pauses = REFERENCES[which]()
    activity = read_fit(data)
    t, p = activity.samples.get("t"), activity.samples.get("power")
    assert activity.pauses == pauses
    expected = skiba_by_hand(t.tolist(), p.tolist(), cp, W_PRIME)
    assert min(expected) < 0.25 * W_PRIME  # the ride does run W′ low

    batch = M.w_prime_balance_1hz(M.moving_segments_1hz(t, p, activity.pauses), cp, W_PRIME)
    assert batch.size == len(expected)
    for k, value in enumerate(batch.tolist()):
        assert_within_1pct(value, expected[k], f"batch second {k}")

    ride = M.LiveRide(pauses=activity.pauses, physiology=Physiology(critical_power=cp, w_prime=W_PRIME))
    for k, (ts, pw) in enumerate(zip(t.tolist(), p.tolist())):
        ride.push(ts, pw)
        snap = ride.snapshot()
        assert snap["moving_s"] == k + 1
        assert_within_1pct(snap["w_prime_balance"], expected[k], f"live second {k}")

    metrics = M.ride_metrics(t, p, pauses=activity.pauses, critical_power=cp, w_prime=W_PRIME)
    assert_within_1pct(metrics.min_w_prime_balance, min(expected), "minimum")
    assert metrics.w_prime_below_25_s == sum(1 for b in expected if b < 0.25 * W_PRIME) > 0
    assert snap["min_w_prime_balance"] == pytest.approx(metrics.min_w_prime_balance)
    assert snap["w_prime_below_25_s"] == metrics.w_prime_below_25_s


def test_a_pause_is_rest_not_left_out():
    """Ten minutes stopped after a hard minute recovers most of W′, as the formula says."""
    t = np.concatenate([np.arange(60.0), 660 + np.arange(10.0)])
    p = np.concatenate([np.full(60, 450.0), np.full(10, 250.0)])
    metrics = M.ride_metrics(t, p, critical_power=CP, w_prime=W_PRIME)
    after_minute = W_PRIME - 60 * 200
    rested = W_PRIME - (W_PRIME - after_minute) * (1 - CP / W_PRIME) ** 600
    track = WPrimeBalance(CP, W_PRIME)
    M.w_prime_balance_1hz(M.moving_segments_1hz(t, p), CP, W_PRIME, track=track)
    assert track.balance == pytest.approx(rested)  # ten seconds at CP change nothing
    assert metrics.min_w_prime_balance == pytest.approx(after_minute)
    assert rested > 0.99 * W_PRIME


@pytest.mark.django_db
def test_the_workout_stores_min_balance_and_time_below_25pct_with_the_profile_cp(reference_fit):
    rider = get_user_model().objects.create_user("rider", password="pw")
    AthleteProfile.objects.create(athlete=rider, ftp=260, critical_power=250, w_prime=20_000)
    workout = workout_from_fit(reference_fit, athlete=rider, title="reference")
    workout.refresh_from_db()
    activity = read_fit(reference_fit)
    expected = skiba_by_hand(activity.samples.get("t").tolist(), activity.samples.get("power").tolist(), CP, W_PRIME)
    assert (workout.critical_power, workout.w_prime) == (250, 20_000)
    assert_within_1pct(workout.min_w_prime_balance, min(expected), "stored minimum")
    assert workout.w_prime_below_25_s == sum(1 for b in expected if b < 0.25 * W_PRIME)
    assert workout.metrics_version == M.METRICS_VERSION == 2


@pytest.mark.django_db
def test_without_a_profile_cp_the_workout_uses_its_ftp_and_20_kj(reference_fit):
    rider = get_user_model().objects.create_user("rider", password="pw")
    workout = workout_from_fit(reference_fit, athlete=rider, title="reference")  # the file's FTP: 260
    activity = read_fit(reference_fit)
    expected = skiba_by_hand(activity.samples.get("t").tolist(), activity.samples.get("power").tolist(), 260.0,
                             DEFAULT_W_PRIME_J)
    assert workout.critical_power is None and workout.ftp == 260
    assert_within_1pct(workout.min_w_prime_balance, min(expected), "stored minimum")
    assert not math.isnan(workout.min_w_prime_balance)
