"""Compliance to a plan and alerts, pure (workouts/compliance.py, workouts/alerts.py): each
figure against a hand computation."""

from dataclasses import dataclass

import pytest

from workouts.alerts import AlertWatch
from workouts.compliance import Compliance, classify, step_index_at


@dataclass(frozen=True)
class S:
    name: str
    start_s: float
    end_s: float
    lo: float
    hi: float

    @property
    def target_w(self):
        return (self.lo, self.hi)


PLAN = [S("warm-up", 0, 20, 100, 150), S("effort", 20, 40, 250, 270), S("easy", 40, 60, 100, 150)]


def test_classify_with_the_tolerance():
    # [250, 270] at 5%: on from 237.5 to 283.5
    assert [classify(p, 250, 270, 0.05) for p in (237.4, 237.5, 260, 283.5, 283.6)] == [
        "under", "on", "on", "on", "over"]


def test_the_step_at_a_plan_second():
    assert [step_index_at(PLAN, s) for s in (-1, 0, 19.9, 20, 59, 60)] == [None, 0, 0, 1, 2, None]


def test_ten_second_power_state_and_compliance_by_hand():
    c = Compliance(PLAN, tolerance_pct=5)
    for s in range(20):  # warm-up at 120 W: on target every second
        assert c.push(s, 120) == "on"
    # The effort at 260 W: the 10 s power climbs from the warm-up's 120 W.
    states = [c.push(s, 260) for s in range(20, 30)]
    p10 = [(120 * (9 - k) + 260 * (k + 1)) / 10 for k in range(10)]  # 134, 148, ..., 246, 260
    assert [classify(p, 250, 270, 0.05) for p in p10] == ["under"] * 8 + ["on"] * 2  # on from 237.5 W
    assert states[:3] == ["on", "on", "under"]  # hysteresis: 'under' must hold 3 s
    assert states[-2:] == ["under", "under"]  # 'on' seen twice: not yet 3 s
    assert c.push(30, 260) == "on"
    snap = c.snapshot(30.5)
    assert (snap["step"], snap["step_name"], snap["step_elapsed_s"], snap["step_remaining_s"]) == (1, "effort", 10, 10)
    assert snap["target_w"] == [250, 270]
    assert snap["pct_of_target"] == pytest.approx(100 * 260 / 260, abs=0.05)
    assert snap["step_compliance"] == pytest.approx(3 / 11, abs=1e-3)  # 28, 29, 30 on of 11 seconds
    assert snap["session_compliance"] == pytest.approx(23 / 31, abs=1e-3)
    assert c.summary()["steps"][0] == {"step": 0, "name": "warm-up", "seconds": 20, "on_target_s": 20, "compliance": 1.0}


def test_a_dropout_counts_only_the_seconds_ridden_and_the_state_goes_blank():
    c = Compliance(PLAN)
    for s in range(5):
        c.push(s, 120)
    snap = c.snapshot(16)  # nothing since second 4: the 10 s window is empty of fresh data
    assert (snap["state"], snap["pct_of_target"]) == (None, None)
    assert snap["step_compliance"] == 1.0  # 5 of 5 seconds ridden were on target


def test_before_and_after_the_plan():
    c = Compliance(PLAN)
    before = c.snapshot(-12)
    assert (before["phase"], before["starts_in_s"], before["step"]) == ("before", 12, None)
    assert c.snapshot(61)["phase"] == "finished"


def test_over_target_and_back():
    c = Compliance([S("tempo", 0, 100, 200, 220)])
    for s in range(10):
        c.push(s, 210)
    # 10 s power 229 (on up to 231), 248, 267, 286 (over): 'over' holds 3 s at second 13
    assert [c.push(s, 400) for s in range(10, 14)] == ["on", "on", "on", "over"]


def test_alerts_fire_once_per_crossing_and_clear():
    w = AlertWatch(hr_pct=95)
    assert w.update(1, heart_rate=180, max_hr=190) == []  # 180 <= 180.5
    assert w.update(2, heart_rate=181, max_hr=190) == [{"kind": "hr_high", "state": "raised", "ride_s": 2}]
    assert w.update(3, heart_rate=185, max_hr=190) == []  # once per crossing
    assert w.update(4, heart_rate=None, max_hr=190) == []  # unknown: no change
    assert w.update(5, heart_rate=170, max_hr=190) == [{"kind": "hr_high", "state": "cleared", "ride_s": 5}]
    assert w.update(6, w_prime_balance=4_999, w_prime=20_000) == [{"kind": "w_prime_low", "state": "raised", "ride_s": 6}]
    assert w.update(7, w_prime_balance=5_000, w_prime=20_000) == [{"kind": "w_prime_low", "state": "cleared", "ride_s": 7}]
    assert w.update(8, stale=True) == [{"kind": "stale", "state": "raised", "ride_s": 8}]
    assert w.active() == ["stale"]
    assert w.update(9, stale=False) == [{"kind": "stale", "state": "cleared", "ride_s": 9}]


def test_off_target_after_more_than_30_s_in_a_row():
    w = AlertWatch()
    assert w.update(100, plan_state="under") == []
    assert w.update(130, plan_state="over") == []  # 30 s: not more than 30
    assert w.update(131, plan_state="under") == [{"kind": "off_target", "state": "raised", "ride_s": 131}]
    assert w.update(140, plan_state=None) == []  # unknown (no fresh data): stays raised
    assert w.update(141, plan_state="on") == [{"kind": "off_target", "state": "cleared", "ride_s": 141}]
    assert w.update(150, plan_state="under") == []  # the clock starts again
    assert w.update(181, plan_state="under")[0]["state"] == "raised"
    assert w.update(182, plan_state="finished") == [{"kind": "off_target", "state": "cleared", "ride_s": 182}]


def test_samples_at_any_rate_count_the_first_of_each_second():
    c = Compliance([S("all", 0, 100, 100, 200)])
    for t, p in [(0.0, 150), (0.5, 900), (1.2, 150), (1.9, 900), (3.0, float("nan")), (3.4, 150)]:
        c.push_sample(t, p)
    assert c.tallies[0].seconds == 3  # seconds 0, 1 and 3 (second 3's first sample with power)
    assert c.power_10s() == 150
