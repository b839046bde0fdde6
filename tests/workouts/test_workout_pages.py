"""The workout for people: the admin's list and change page (rounded values with units, the
athlete picked by name) and the workout page /workouts/<id> for its readers only."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from streams.models import Share
from tests.helpers import logged_in, make_user
from workouts import display
from workouts.charts import power_hr_svg, ride_clock
from workouts.models import AthleteProfile
from workouts.rides.simulate import simulate_ride
from workouts.samples import samples_from_columns
from workouts.services import workout_create

START = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


def ride_samples(duration=3723, seed=1):
    ride = simulate_ride(duration=duration, seed=seed)
    return samples_from_columns({k: [None if math.isnan(x) else x for x in v.tolist()] for k, v in ride.items()})


@pytest.fixture
def athlete(transactional_db):  # the page's identity closes old connections (channels' database_sync_to_async)
    user = make_user("anna", password="pw")
    user.first_name, user.last_name = "Anna", "Berg"
    user.save()
    return user


@pytest.fixture
def workout(athlete):
    return workout_create(athlete=athlete, title="Tuesday intervals", started_at=START, samples=ride_samples(), ftp=250)


# --- what a number looks like -----------------------------------------------------------------
def test_numbers_read_with_units_and_sensible_rounding():
    assert display.duration(3723) == "1:02:03" and display.duration(245.4) == "4:05"
    assert display.watts(191.6) == "192 W" and display.intensity(0.7666) == "0.77"
    assert display.tss(59.21) == "59.2" and display.bpm(147.5) == "148 bpm"
    assert display.watts(None) == "—"
    assert ride_clock(3723) == "1:02"


def test_the_chart_has_axes_gridlines_and_a_legend(workout):
    svg = str(power_hr_svg(workout.samples))
    assert svg.startswith("<svg") and 'class="grid"' in svg
    labels = re.findall(r">([^<>]+)</text>", svg)
    assert "W" in labels and "bpm" in labels  # the two value axes
    assert "0:00" in labels and "1:00" in labels  # ride time, h:mm
    assert "power (W)" in labels and "heart rate (bpm)" in labels  # the legend
    assert "100" in labels and "160" in labels  # power and heart rate ticks
    assert power_hr_svg(None) == "—"


# --- the admin --------------------------------------------------------------------------------
def test_the_changelist_shows_rounded_values_with_units(workout):
    html = logged_in(make_user("root", superuser=True)).get("/admin/workouts/workout/").content.decode()
    for header in (">NP<", ">IF<", ">TSS<", ">Duration<"):
        assert header in html, header
    assert "1:02:03" in html and display.watts(workout.normalized_power) in html
    assert display.intensity(workout.intensity_factor) in html and display.tss(workout.tss) in html
    assert "Anna Berg" in html


def test_the_change_page_shows_the_summary_peaks_chart_and_page_link(workout):
    html = logged_in(make_user("root", superuser=True)).get(f"/admin/workouts/workout/{workout.pk}/change/").content.decode()
    assert "<svg" in html and "power (W)" in html
    for label in ("Moving time", "NP", "IF", "TSS", "Avg power", "Avg HR", "5 s", "20 min"):
        assert f"<th scope=\"row\">{label}</th>" in html, label
    assert f'href="/workouts/{workout.pk}"' in html
    assert 'class="admin-autocomplete' in html  # the athlete picked by name, not by a raw id
    assert "vForeignKeyRawIdAdminField" not in html


def test_np_of_a_short_ride_says_low_confidence(athlete):
    short = workout_create(athlete=athlete, title="short", started_at=START, samples=ride_samples(300), ftp=250)
    rows = {r.label: r for r in display.workout_summary(short)}
    assert rows["NP"].note == "low confidence (under 10 min)"


def test_the_athlete_autocomplete_finds_users_by_name(workout):
    client = logged_in(make_user("root", superuser=True))
    for model in ("workout", "athleteprofile"):
        answer = client.get("/admin/autocomplete/", {"term": "Ber", "app_label": "workouts", "model_name": model,
                                                     "field_name": "athlete"})
        assert answer.status_code == 200, answer.content
        assert [r["text"] for r in answer.json()["results"]] == ["anna"]


def test_the_profile_admin_shows_units_and_picks_the_athlete_by_name(athlete):
    AthleteProfile.objects.create(athlete=athlete, ftp=220, max_heart_rate=188, weight_kg=58)
    client = logged_in(make_user("root", superuser=True))
    html = client.get("/admin/workouts/athleteprofile/").content.decode()
    assert "220 W" in html and "188 bpm" in html and "58.0 kg" in html and "Anna Berg" in html
    profile = AthleteProfile.objects.get()
    html = client.get(f"/admin/workouts/athleteprofile/{profile.pk}/change/").content.decode()
    assert 'class="admin-autocomplete' in html


# --- the workout page -------------------------------------------------------------------------
def viewer_with_share(athlete):
    coach = make_user("coach", password="pw")
    Share.objects.create(owner=athlete, viewer=coach)
    return coach


def viewer_with_permission():
    auditor = make_user("auditor", password="pw")
    auditor.user_permissions.add(Permission.objects.get(codename="view_workout"))
    return auditor


# who -> what the page answers
PAGE_READERS = [
    ("owner", 200),
    ("shared viewer", 200),
    ("view_workout permission", 200),
    ("stranger", 404),
    ("staff without permission", 404),
]


@pytest.mark.parametrize(("who", "status"), PAGE_READERS)
def test_the_workout_page_is_for_its_readers(workout, athlete, who, status):
    user = {
        "owner": lambda: athlete,
        "shared viewer": lambda: viewer_with_share(athlete),
        "view_workout permission": viewer_with_permission,
        "stranger": lambda: make_user("stranger", password="pw"),
        "staff without permission": lambda: make_user("clerk", password="pw", staff=True),
    }[who]()
    page = logged_in(user).get(f"/workouts/{workout.pk}")
    assert page.status_code == status
    if status == 200:
        html = page.content.decode()
        assert "Tuesday intervals" in html and "Anna Berg" in html and "1 Nov 2026" in html
        assert "1:02:03" in html and display.watts(workout.normalized_power) in html
        assert "<svg" in html and ">Peak power<" in html


def test_an_anonymous_visitor_is_sent_to_log_in_and_back(workout):
    page = Client().get(f"/workouts/{workout.pk}")
    assert page.status_code == 302
    assert page["Location"] == f"/admin/login/?next=/workouts/{workout.pk}"


def test_a_missing_workout_is_a_404_like_an_unreadable_one(workout, athlete):
    assert logged_in(athlete).get("/workouts/999999").status_code == 404


def test_a_database_that_cannot_confirm_the_visitor_is_the_styled_503(workout, athlete, monkeypatch):
    from streams.access import identity

    async def unavailable(request):
        raise identity.IdentityUnavailable()

    monkeypatch.setattr(identity, "identify_request", unavailable)
    page = logged_in(athlete).get(f"/workouts/{workout.pk}")
    assert page.status_code == 503 and page["Retry-After"] == "5"
    assert 'data-status="503"' in page.content.decode() and "site/site." in page.content.decode()
