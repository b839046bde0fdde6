"""Workout plans without the API: the steps' schema, the typed grammar (and its errors, each
naming the line), ZWO import, the steps resolved to watts and the step at a ride second, the
model's validation (the admin's forms) and the admin."""

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from streams.store.services import StreamMeta
from tests.helpers import logged_in, make_user
from workouts.models import AthleteProfile, WorkoutPlan
from workouts.plan_services import plan_create, ride_plan
from workouts.plans import (
    PlanError,
    plan_duration_s,
    plan_from_zwo,
    resolved_steps,
    step_at,
    steps_from_json,
    steps_from_text,
    stored_steps,
)
from workouts.plans.steps import MAX_PLAN_S, MAX_STEPS

DATA = Path(__file__).parent / "data"


def stored_text(text):
    return stored_steps(steps_from_text(text))


# --- the schema ------------------------------------------------------------------------------
def test_json_steps_are_stored_in_the_contracts_form_and_named_when_unnamed():
    steps = steps_from_json([
        {"name": "warm-up", "duration_s": 600, "target": {"pct_ftp": [50, 60]}},
        {"duration_s": 30, "target": {"watts": [240, 260]}, "cadence": [85, 95]},
    ])
    assert stored_steps(steps) == [
        {"name": "warm-up", "duration_s": 600, "target": {"pct_ftp": [50.0, 60.0]}},
        {"name": "30 s at 240-260 W @85-95 rpm", "duration_s": 30, "target": {"watts": [240, 260]}, "cadence": [85, 95]},
    ]


@pytest.mark.parametrize("step,problem", [
    ({"duration_s": 0, "target": {"pct_ftp": [50, 60]}}, "steps.0.duration_s: Input should be greater than or equal to 1"),
    ({"duration_s": 60, "target": {"pct_ftp": [70, 60]}}, "low is above high"),
    ({"duration_s": 60, "target": {"watts": [300, 200]}}, "watts range [300, 200]: low is above high"),
    ({"duration_s": 60, "target": {"pct_ftp": [50, 60], "watts": [1, 2]}}, "exactly one of them"),
    ({"duration_s": 60, "target": {}}, "exactly one of them"),
    ({"duration_s": 60, "target": {"pct_ftp": [50, 900]}}, "less than or equal to 300"),
    ({"duration_s": 60, "target": {"watts": [-1, 20]}}, "greater than or equal to 0"),
    ({"duration_s": 60, "target": {"rpe": [5, 6]}}, "rpe"),
    ({"duration_s": 60, "target": {"watts": [100, 200]}, "cadence": [100, 90]}, "cadence range [100, 90]"),
    ({"duration_s": 60, "target": {"watts": [100, 200]}, "cadence": [90, 900]}, "less than or equal to 250"),
    ({"duration_s": 60, "target": {"watts": [100, 200]}, "colour": "red"}, "colour"),
    ({"name": "a\x00b", "duration_s": 60, "target": {"watts": [1, 2]}}, "NUL"),
])
def test_bad_steps_are_refused_naming_the_problem(step, problem):
    with pytest.raises(PlanError) as caught:
        steps_from_json([step])
    assert problem in str(caught.value)


def test_a_plan_has_one_to_max_steps_and_lasts_at_most_a_day():
    with pytest.raises(PlanError, match="at least one step"):
        steps_from_json([])
    one = {"duration_s": 1, "target": {"watts": [1, 2]}}
    assert len(steps_from_json([one] * MAX_STEPS)) == MAX_STEPS
    with pytest.raises(PlanError, match=f"at most {MAX_STEPS} steps"):
        steps_from_json([one] * (MAX_STEPS + 1))
    with pytest.raises(PlanError, match="lasts at most 24 h"):
        steps_from_json([{"duration_s": MAX_PLAN_S // 3 + 1, "target": {"watts": [1, 2]}}] * 3)


# --- the typed form --------------------------------------------------------------------------
def test_the_issues_example_reads_as_ten_steps():
    steps = stored_text("10m 55%\n4x(8m 105%, 4m 55%)\n10m 50%")
    assert [s["duration_s"] for s in steps] == [600] + [480, 240] * 4 + [600]
    assert [s["target"]["pct_ftp"][0] for s in steps] == [55] + [105, 55] * 4 + [50]
    assert steps[0]["name"] == "10 min at 55% FTP"
    assert steps[1]["name"] == "8 min at 105% FTP (1/4)" and steps[8]["name"] == "4 min at 55% FTP (4/4)"


def test_names_ranges_watts_cadence_compound_durations_and_comments():
    steps = stored_text("""
        # Tuesday's session
        warm-up: 1h30m 50-60 % FTP @85-95rpm
        sprints: 3 x (on: 15s 600w @110 rpm, off: 2m45s 40%)

        cool-down: 10 min 120-150W   # easy
        30sec 45%
    """)
    assert steps[0] == {"name": "warm-up", "duration_s": 5400, "target": {"pct_ftp": [50.0, 60.0]}, "cadence": [85, 95]}
    assert steps[1] == {"name": "sprints: on (1/3)", "duration_s": 15, "target": {"watts": [600, 600]}, "cadence": [110, 110]}
    assert steps[2] == {"name": "sprints: off (1/3)", "duration_s": 165, "target": {"pct_ftp": [40.0, 40.0]}}
    assert len(steps) == 1 + 6 + 2
    assert steps[7] == {"name": "cool-down", "duration_s": 600, "target": {"watts": [120, 150]}}
    assert steps[8]["duration_s"] == 30


def test_a_repeat_may_span_lines():
    steps = stored_text("5m 50%\nmain: 2x(\n  8m 105%,\n  4m 55%\n)\n5m 50%")
    assert [s["name"] for s in steps[1:5]] == [
        "main: 8 min at 105% FTP (1/2)", "main: 4 min at 55% FTP (1/2)",
        "main: 8 min at 105% FTP (2/2)", "main: 4 min at 55% FTP (2/2)",
    ]
    assert len(steps) == 6


@pytest.mark.parametrize("text,message", [
    ("10m 55%\n10m", "line 2 ('10m'): expected a target like 55%, 100-110%, 250w or 240-260w after the duration"),
    ("10 55%", "line 1 ('10 55%'): expected a duration like 10m, 30s, 1h or 8m30s"),
    ("ten minutes 55%", "line 1 ('ten minutes 55%'): expected a duration"),
    ("10m 55% easy", "line 1 ('10m 55% easy'): expected nothing more, or a cadence like @90rpm or @85-95rpm after the target, not 'easy'"),
    ("10m 55 watts", "line 1 ('10m 55 watts'): expected a target"),
    ("10m 110-100%", "line 1 ('10m 110-100%'): pct_ftp range [110.0, 100.0]: low is above high"),
    ("10m 400%", "line 1 ('10m 400%'): pct_ftp.0: Input should be less than or equal to 300"),
    ("10m 250.5w", "line 1 ('10m 250.5w'): watts are whole numbers"),
    ("10m 55% @95-85rpm", "cadence range [95, 85]: low is above high"),
    ("0s 55%", "line 1 ('0s 55%'): duration_s: Input should be greater than or equal to 1"),
    ("1m 50%\n4x(8m 105%, 4m 55%", "line 2 ('4x(8m 105%, 4m 55%'): a repeat ends with ')'"),
    ("4x(8m 105%, , 4m 55%)", "line 1 ('4x(8m 105%, , 4m 55%)'): a repeat lists its steps"),
    ("0x(8m 105%)", "a repeat is 1 to 100 times, not 0"),
    ("2x(3x(1m 50%))", "repeats do not nest"),
    ("2x(\n1m 50%\n", "line 1 ('2x('): the repeat opened here is not closed by a line with ')'"),
    ("1m 50%\n)", "line 2 (')'): ')' closes no repeat"),
    ("# nothing but a comment\n\n", "a plan has at least one step"),
    ("100x(1h 50%)", "lasts at most 24 h"),
    ("13h 50%", "duration_s: Input should be less than or equal to 43200"),
])
def test_a_bad_line_is_named_with_what_was_expected(text, message):
    with pytest.raises(PlanError) as caught:
        steps_from_text(text)
    assert message in str(caught.value)


def test_a_long_text_is_refused():
    with pytest.raises(PlanError, match="at most 20000 characters"):
        steps_from_text("1m 50%\n" * 4000)


# --- ZWO -------------------------------------------------------------------------------------
def test_a_zwo_file_becomes_steps_with_ramps_split_by_the_minute():
    name, steps = plan_from_zwo((DATA / "sweet_spot.zwo").read_text())
    stored = stored_steps(steps)
    assert name == "Sweet spot 3x10"
    warmup, intervals, rest = stored[:5], stored[5:11], stored[11:]
    # 300 s from 40% to 70%: five minutes, each at the ramp's power at its middle.
    assert [s["target"]["pct_ftp"][0] for s in warmup] == [43.0, 49.0, 55.0, 61.0, 67.0]
    assert all(s["duration_s"] == 60 and s["cadence"] == [85, 85] for s in warmup)
    assert warmup[0]["name"] == "warm-up 40-70% (1/5)"
    assert [(s["duration_s"], s["target"]["pct_ftp"][0], s.get("cadence")) for s in intervals] == [
        (600, 90.0, [92, 92]), (180, 50.0, [80, 80])] * 3
    assert intervals[0]["name"] == "on: 10 min at 90% FTP @92 rpm (1/3)"
    assert rest[0] == {"name": "4 min at 65% FTP", "duration_s": 240, "target": {"pct_ftp": [65.0, 65.0]}}
    assert rest[1]["target"] == {"pct_ftp": [70.0, 75.0]}
    # 150 s down from 60% to 30%: 60 + 60 + 30 s, at the middles 54%, 42%, 33%.
    assert [(s["duration_s"], s["target"]["pct_ftp"][0]) for s in rest[2:]] == [(60, 54.0), (60, 42.0), (30, 33.0)]
    assert sum(s["duration_s"] for s in stored) == 300 + 3 * 780 + 240 + 120 + 150


@pytest.mark.parametrize("xml,message", [
    ("<workout_file><workout>", "not well-formed XML"),
    ("<plan/>", "the root element is <plan>"),
    ("<workout_file/>", "no <workout> element"),
    ('<workout_file><workout><FreeRide Duration="600"/></workout></workout_file>',
     "ZWO <FreeRide> (element 1 of <workout>): has no power target"),
    ('<workout_file><workout><SteadyState Duration="60" Power="0.5"/><SteadyState Power="0.5"/></workout></workout_file>',
     "ZWO <SteadyState> (element 2 of <workout>): the attribute Duration is missing"),
    ('<workout_file><workout><SteadyState Duration="x" Power="0.5"/></workout></workout_file>',
     "Duration='x' is not a number"),
    ('<workout_file><workout><SteadyState Duration="60" Power="5"/></workout></workout_file>',
     "less than or equal to 300"),
    ('<workout_file><workout><Dance Duration="60"/></workout></workout_file>', "ZWO <Dance>"),
    ('<!DOCTYPE x [<!ENTITY a "aaaa">]><workout_file><name>&a;</name></workout_file>', "DOCTYPE or entity"),
])
def test_a_bad_zwo_file_is_refused_naming_the_element(xml, message):
    with pytest.raises(PlanError) as caught:
        plan_from_zwo(xml)
    assert message in str(caught.value)


# --- resolved to watts -----------------------------------------------------------------------
def test_steps_resolve_to_watts_with_cumulative_seconds():
    steps = stored_text("10m 55%\n2x(8m 100-110% @90rpm, 4m 200w)")
    resolved = resolved_steps(steps, 250)
    assert [(s.index, s.start_s, s.end_s) for s in resolved] == [
        (0, 0, 600), (1, 600, 1080), (2, 1080, 1320), (3, 1320, 1800), (4, 1800, 2040)]
    assert resolved[0].target_w == (137.5, 137.5)
    assert resolved[1].target_w == (250.0, 275.0) and resolved[1].cadence == (90, 90)
    assert resolved[2].target_w == (200.0, 200.0)  # watts stay watts
    assert plan_duration_s(resolved) == 2040
    without_ftp = resolved_steps(steps, None)
    assert without_ftp[0].target_w is None and without_ftp[2].target_w == (200.0, 200.0)


def test_the_step_at_a_ride_second_with_elapsed_and_remaining():
    resolved = resolved_steps(stored_text("10m 55%\n2x(8m 105%, 4m 55%)"), 200)
    assert step_at(resolved, 0).step.index == 0
    at = step_at(resolved, 599.5)
    assert (at.step.index, at.elapsed_s, at.remaining_s) == (0, 599.5, 0.5)
    at = step_at(resolved, 600)
    assert (at.step.index, at.elapsed_s, at.remaining_s) == (1, 0, 480)
    assert step_at(resolved, 1799).step.index == 3
    assert step_at(resolved, 2039).step.index == 4
    assert step_at(resolved, 2040) is None  # over
    assert step_at(resolved, -1) is None
    # A plan that starts at ride second 120 (plan_start): nothing before, shifted after.
    assert step_at(resolved, 119, start_s=120) is None
    at = step_at(resolved, 720, start_s=120)
    assert (at.step.index, at.elapsed_s) == (1, 0)
    assert step_at([], 5) is None


# --- the model and a ride's plan --------------------------------------------------------------
def test_the_model_validates_its_steps_for_the_admin(db):
    owner = make_user("coach")
    plan = WorkoutPlan(owner=owner, name="bad", steps=[{"duration_s": 60, "target": {"watts": [9, 1]}}])
    with pytest.raises(ValidationError) as caught:
        plan.full_clean()
    assert "low is above high" in str(caught.value)
    plan.steps = stored_text("1m 50%")
    plan.full_clean()


def test_a_streams_plan_resolves_with_the_streams_ftp_else_the_profiles(db):
    owner = make_user("rider")
    plan = plan_create(owner=owner, name="p", steps=steps_from_text("10m 50%\n5m 300w"))
    meta = StreamMeta(owner_id=owner.pk, plan=plan.pk, plan_start=30, ftp=280)
    ridden = ride_plan(meta)
    assert (ridden.plan_id, ridden.name, ridden.start_s, ridden.ftp) == (plan.pk, "p", 30, 280)
    assert [s.target_w for s in ridden.steps] == [(140.0, 140.0), (300.0, 300.0)]
    AthleteProfile.objects.create(athlete=owner, ftp=200)
    from_profile = ride_plan(StreamMeta(owner_id=owner.pk, plan=plan.pk))
    assert from_profile.ftp == 200 and from_profile.start_s == 0 and from_profile.steps[0].target_w == (100.0, 100.0)
    assert ride_plan(StreamMeta(owner_id=owner.pk)) is None
    plan.delete()
    assert ride_plan(meta) is None  # a deleted plan: no plan


def test_the_admin_lists_shows_and_takes_typed_steps(db):
    root = make_user("root", superuser=True)
    owner = make_user("coach")
    plan = plan_create(owner=owner, name="Threshold", steps=steps_from_text("10m 55%\n2x(8m 105%, 4m 55%)"))
    client = logged_in(root)
    listing = client.get("/admin/workouts/workoutplan/")
    assert listing.status_code == 200 and "Threshold" in listing.content.decode()
    page = client.get(f"/admin/workouts/workoutplan/{plan.pk}/change/").content.decode()
    assert 'class="plan-steps"' in page and "8 min at 105% FTP (1/2)" in page and "105% FTP" in page
    resp = client.post(f"/admin/workouts/workoutplan/{plan.pk}/change/", {
        "name": "Threshold", "owner": owner.pk, "steps": "[]", "text": "warm-up: 5m 50%\n20m 95-100%",
    })
    assert resp.status_code == 302, resp.content.decode()[:2000]
    plan.refresh_from_db()
    assert plan.steps[0]["name"] == "warm-up" and plan.steps[1]["target"] == {"pct_ftp": [95.0, 100.0]}
    resp = client.post(f"/admin/workouts/workoutplan/{plan.pk}/change/", {
        "name": "Threshold", "owner": owner.pk, "steps": "[]", "text": "20m lots",
    })
    assert resp.status_code == 200 and "line 1 (&#x27;20m lots&#x27;): expected a target" in resp.content.decode()
