import math

import numpy as np
import pytest

from workouts import metrics as M
from workouts.rides.simulate import simulate_ride


def classic_np(p1):
    """Hand-computable reference: 30-sample rolling mean of gap-free 1 Hz power."""
    c = np.cumsum(np.concatenate(([0.0], p1)))
    means = (c[30:] - c[:-30]) / 30
    return float(np.mean(means**4) ** 0.25)


def test_constant_power_gives_that_power():
    t = np.arange(1200.0)
    assert M.normalized_power(t, np.full(t.size, 237.0)) == pytest.approx(237.0, rel=1e-12)


def test_known_interval_ride_matches_hand_computed_values():
    # 10 min at 100 W then 10 min at 300 W, 1 Hz: windows 0..570 at 100 W, 30 transition
    # windows, the rest at 300 W.
    p = np.concatenate((np.full(600, 100.0), np.full(600, 300.0)))
    t = np.arange(p.size, dtype=float)
    means = [100.0] * 571 + [100 + 200 * k / 30 for k in range(1, 30)] + [300.0] * 571
    expected = (sum(m**4 for m in means) / len(means)) ** 0.25
    assert M.normalized_power(t, p) == pytest.approx(expected, rel=1e-12)
    m = M.ride_metrics(t, p, ftp=250)
    assert m.avg_power == pytest.approx(200.0)
    assert m.intensity_factor == pytest.approx(expected / 250)
    assert m.tss == pytest.approx(1200 * expected * (expected / 250) / (250 * 3600) * 100)
    assert m.variability_index == pytest.approx(expected / 200)
    assert m.work_kj == pytest.approx(240.0)
    assert m.peak_5min == pytest.approx(300.0) and m.peak_20min == pytest.approx(200.0)
    assert m.peak_60min is None
    assert m.moving_time_s == 1200 and not m.np_low_confidence


def test_under_30_seconds_is_none_and_short_rides_are_flagged():
    t = np.arange(29.0)
    assert M.normalized_power(t, np.full(29, 200.0)) is None
    m = M.ride_metrics(np.arange(300.0), np.full(300, 200.0))
    assert m.normalized_power == pytest.approx(200.0) and m.np_low_confidence


@pytest.mark.parametrize("variant", ["2hz", "0.5hz", "jitter"])
def test_same_ride_at_other_rates_gives_the_same_np(variant):
    ride = simulate_ride(duration=3600, hz=1, seed=3)
    base = M.normalized_power(ride["t"], ride["power"])
    rng = np.random.default_rng(7)
    t, p = ride["t"], ride["power"]
    if variant == "2hz":
        t2 = np.arange(0, t[-1] + 1, 0.5)
        p2 = np.repeat(p, 2)[: t2.size]
    elif variant == "0.5hz":
        t2, p2 = t[::2], np.nanmean(np.vstack((p[::2], p[1::2][: p[::2].size])), axis=0)
    else:
        t2 = t + rng.uniform(-0.3, 0.3, t.size)
        t2[0] = 0.0
        p2 = p
    assert M.normalized_power(t2, p2) == pytest.approx(base, rel=0.005)


def test_short_dropouts_are_interpolated():
    t = np.arange(1200.0)
    p = np.full(t.size, 250.0)
    p[300:320] = np.nan  # 20 s power-meter dropout while riding
    assert M.normalized_power(t, p) == pytest.approx(250.0)
    assert M.ride_metrics(t, p).moving_time_s == 1200


def test_pauses_are_left_out_not_filled_with_zeros():
    t = np.concatenate((np.arange(600.0), 600 + 300 + np.arange(600.0)))  # 5 min stop
    p = np.full(t.size, 250.0)
    m = M.ride_metrics(t, p)
    assert m.normalized_power == pytest.approx(250.0)
    assert m.moving_time_s == 1200 and m.duration_s == pytest.approx(1500.0)
    # the same pause given as timer events (samples keep coming while stopped)
    t2 = np.arange(1500.0)
    p2 = np.where((t2 >= 600) & (t2 < 900), 0.0, 250.0)
    assert M.normalized_power(t2, p2, pauses=[(600, 900)]) == pytest.approx(250.0)
    assert M.normalized_power(t2, p2) < 240  # without the timer events the zeros count


def test_coasting_zeros_are_real_power():
    t = np.arange(1200.0)
    p = np.where((t // 60) % 2 == 0, 300.0, 0.0)
    assert M.normalized_power(t, p) > M.ride_metrics(t, p).avg_power * 1.2


def live(t, p, hr=None, cad=None, pauses=None, ftp=None) -> dict:
    ride = M.LiveRide(pauses=pauses)
    n = len(t)
    hr = np.full(n, np.nan) if hr is None else hr
    cad = np.full(n, np.nan) if cad is None else cad
    for row in zip(t.tolist(), p.tolist(), hr.tolist(), cad.tolist()):
        ride.push(*row)
    return ride.snapshot(ftp=ftp)


LIVE_AS_BATCH = {
    "elapsed_s": "duration_s", "moving_s": "moving_time_s", "samples": "sample_count", "avg_power": "avg_power",
    "max_power": "max_power", "normalized_power": "normalized_power", "np_low_confidence": "np_low_confidence",
    "intensity_factor": "intensity_factor", "tss": "tss", "avg_heart_rate": "avg_hr", "avg_cadence": "avg_cadence",
}


def assert_live_equals_batch(snapshot: dict, batch: M.RideMetrics) -> None:
    for live_name, batch_name in LIVE_AS_BATCH.items():
        expected = getattr(batch, batch_name)
        if isinstance(expected, float):
            assert snapshot[live_name] == pytest.approx(expected, rel=1e-9), live_name
        else:
            assert snapshot[live_name] == expected, live_name


@pytest.mark.parametrize("cut", [29, 30, 31, 900, 4000, 7199])
def test_live_form_equals_batch_at_every_moment(cut):
    """The live engine at any point of a ride = ride_metrics of the samples so far: dropouts,
    a gap longer than GAP_S (a new segment), coasting zeros, heart rate and cadence."""
    ride = simulate_ride(duration=7200, hz=1, seed=5)
    t = ride["t"].copy()
    t[4000:] += 120  # a gap: a new moving segment
    s = slice(0, cut)
    snapshot = live(t[s], ride["power"][s], ride["heart_rate"][s], ride["cadence"][s], ftp=250)
    batch = M.ride_metrics(t[s], ride["power"][s], ride["heart_rate"][s], ride["cadence"][s], ftp=250)
    assert_live_equals_batch(snapshot, batch)


def test_live_form_with_other_rates_and_timer_pauses():
    t = np.arange(0, 1500, 0.5)
    p = np.where((t >= 600) & (t < 900), 0.0, 200.0 + (t % 60))
    hr = 120 + (t % 30)
    batch = M.ride_metrics(t, p, hr, pauses=[(600, 900)], ftp=280)
    assert_live_equals_batch(live(t, p, hr, pauses=[(600, 900)], ftp=280), batch)


def test_live_form_jittered_times_and_trailing_dropouts():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.4, 1.6, 3000))
    p = 150 + 100 * rng.random(3000)
    p[rng.random(3000) < 0.05] = np.nan
    p[-7:] = np.nan  # the last samples have no power (yet): not moving time
    assert_live_equals_batch(live(t, p, ftp=200), M.ride_metrics(t, p, ftp=200))


def test_live_form_short_windows_and_empty():
    ride = M.LiveRide()
    assert ride.snapshot()["samples"] == 0 and ride.snapshot()["normalized_power"] is None
    for i in range(5):
        ride.push(i, 100.0 + i)
    snap = ride.snapshot(ftp=250)
    assert snap["power_3s"] == pytest.approx((102 + 103 + 104) / 3)
    assert snap["power_30s"] is None and snap["normalized_power"] is None and snap["tss"] is None
    with pytest.raises(ValueError, match="increasing"):
        ride.push(4, 100.0)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="increasing"):
        M.normalized_power([0, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="same length"):
        M.normalized_power([0, 1], [1])


def test_hr_cadence_and_max_values():
    t = np.arange(600.0)
    hr = np.full(600, 140.0)
    hr[:100] = np.nan
    cad = np.where(t < 300, 90.0, 0.0)
    m = M.ride_metrics(t, np.full(600, 200.0), heart_rate=hr, cadence=cad)
    assert m.avg_hr == pytest.approx(140.0) and m.max_hr == 140.0
    assert m.avg_cadence == pytest.approx(90.0)  # coasting zeros excluded, as head units do
    assert m.max_power == 200.0 and m.sample_count == 600


@pytest.mark.parametrize("n", [30, 31, M.BLOCK - 1, M.BLOCK, M.BLOCK + 1, M.BLOCK + 29, 2 * M.BLOCK + 7])
def test_blockwise_np_equals_one_shot_reference_at_block_edges(n):
    p = np.random.default_rng(n).uniform(0, 500, n)
    assert M.np_from_1hz(p) == pytest.approx(classic_np(p), rel=1e-9)


def test_live_form_long_power_dropout_holds_no_backlog():
    """100 s of heart rate without power (> GAP_S): a new segment, as in ride_metrics; the
    engine keeps at most GAP_S of missing values waiting for interpolation."""
    t = np.arange(600.0)
    p = 180 + (t % 40)
    p[200:300] = np.nan
    hr = np.full(600, 130.0)
    ride = M.LiveRide()
    for row in zip(t.tolist(), p.tolist(), hr.tolist(), [math.nan] * 600):
        ride.push(*row)
        assert len(ride._missing) <= M.GAP_S + 1
    assert_live_equals_batch(ride.snapshot(ftp=250), M.ride_metrics(t, p, hr, ftp=250))
