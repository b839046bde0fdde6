"""simulate_ride and demo_ride against the suite's real Redis: the FTP is set, the start says
where to look, the group ride makes athletes with profiles owning public streams, and their
rides end as workouts."""

from __future__ import annotations

import io
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from streams.store.keys import key_layout
from tests.helpers import key
from workouts.models import AthleteProfile, Workout, WorkoutPlan
from workouts.rides.demo import DEMO_ATHLETES


def meta_of(sync_r, name: str) -> dict:
    from django.conf import settings

    return sync_r.hgetall(key_layout(settings.REDIS).stream_keys(name).meta)


@pytest.mark.django_db
def test_simulate_ride_with_ftp_sets_the_streams_ftp_and_says_where_to_watch(sync_r):
    out = io.StringIO()
    call_command("simulate_ride", "ftp-ride", "--duration", "60", "--speedup", "0", "--ftp", "230", stdout=out)
    assert meta_of(sync_r, "ftp-ride")["ftp"] == "230"
    assert sync_r.xlen(key("ftp-ride")) >= 60
    text = out.getvalue()
    assert "Riding ftp-ride" in text and "at 0x" in text and "as fast as possible" in text
    assert "http://127.0.0.1:8000/live/ftp-ride" in text
    assert "Published 60 samples to ftp-ride" in text


@pytest.mark.django_db
def test_simulate_ride_without_ftp_leaves_the_streams_ftp_alone(sync_r):
    out = io.StringIO()
    call_command("simulate_ride", "plain-ride", "--duration", "30", "--speedup", "10", "--no-end",
                 "--base-url", "http://example.test:9000/", stdout=out)
    assert "ftp" not in meta_of(sync_r, "plain-ride")
    text = out.getvalue()
    assert "at 10x, about 0:03" in text and "http://example.test:9000/live/plain-ride" in text
    assert "stays open (--no-end)" in text


def test_the_eta_reads_like_a_clock():
    from workouts.rides.riders import eta_text

    assert eta_text(3600, 10) == "about 6:00"
    assert eta_text(3 * 3600, 1) == "about 3:00:00"
    assert eta_text(60, 0) == "as fast as possible"


@pytest.mark.django_db(transaction=True)  # the command saves workouts from its own event loop
def test_demo_ride_makes_athletes_on_public_streams_and_ends_their_rides_as_workouts(sync_r, settings):
    settings.RIDE_AUTO_ARCHIVE = False  # no server (no janitor) here: the command archives
    out = io.StringIO()
    call_command("demo_ride", "--duration", "30", "--speedup", "0", stdout=out)
    text = out.getvalue()
    assert "Front page: http://127.0.0.1:8000/" in text and "/live/?streams=" in text
    users = get_user_model().objects.filter(username__in=[a.username for a in DEMO_ATHLETES[:4]])
    assert users.count() == 4
    profiles = {p.athlete.username: p for p in AthleteProfile.objects.select_related("athlete")}
    for athlete in DEMO_ATHLETES[:4]:
        assert profiles[athlete.username].ftp == athlete.ftp
        assert profiles[athlete.username].max_heart_rate == athlete.max_heart_rate
    assert len({a.ftp for a in DEMO_ATHLETES[:4]}) == 4 and len({a.seed for a in DEMO_ATHLETES[:4]}) == 4
    workouts = list(Workout.objects.select_related("athlete"))
    assert len(workouts) == 4 and {w.athlete.username for w in workouts} == {u.username for u in users}
    plan = WorkoutPlan.objects.get()  # the group's plan (simulate_ride's shape), on every stream
    assert plan.public and [s["name"] for s in plan.steps] == ["warm-up", "endurance", "on 1", "endurance", "cool-down"]
    assert f"/api/plans/{plan.pk}" in text
    for w in workouts:
        assert w.source == "stream" and w.sample_count == 30 and w.ftp is not None
        assert f"/workouts/{w.pk}" in text
        assert w.plan_compliance["plan_id"] == plan.pk and 0 <= w.plan_compliance["session"] <= 1
        assert [lap["label"] for lap in w.laps] == ["warm-up", "endurance", "on 1", "endurance", "cool-down"]
    streams = [line.split("/live/")[1] for line in text.splitlines() if "FTP" in line and "/live/" in line]
    assert len(streams) == 4
    for name in streams:
        meta = meta_of(sync_r, name)
        assert meta["visibility"] == "public" and meta["owner_name"].startswith("demo-")
        assert meta["plan"] == str(plan.pk)
        assert meta.get("ended_reason") == "owner"  # the demo ends its rides (docs/rides.md)


@pytest.mark.django_db(transaction=True)
def test_demo_ride_runs_again_on_fresh_streams(sync_r, settings):
    settings.RIDE_AUTO_ARCHIVE = False
    call_command("demo_ride", "--duration", "10", "--speedup", "0", "--riders", "2", stdout=io.StringIO())
    first = set(sync_r.scan_iter(match="*anna-*"))
    time.sleep(1.1)  # the streams' names carry the second they start
    call_command("demo_ride", "--duration", "10", "--speedup", "0", "--riders", "2", stdout=io.StringIO())
    assert Workout.objects.count() == 4
    assert AthleteProfile.objects.count() == 2
    assert WorkoutPlan.objects.count() == 1  # the same length: the same plan
    assert first and set(sync_r.scan_iter(match="*anna-*")) > first


def test_demo_ride_refuses_bad_arguments(db):
    with pytest.raises(Exception, match="--riders"):
        call_command("demo_ride", "--riders", "0")
    with pytest.raises(Exception, match="--duration <= 86400"):
        call_command("demo_ride", "--duration", "86401")
