"""FIT export (GET /api/workouts/{id}/fit, the admin's "Download as FIT"): the file decodes with
Garmin's own SDK, and importing it back gives the workout's samples and NP again."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient
from fit_tool.record import Record
from fit_tool.profile.messages.record_message import RecordMessage
from garmin_fit_sdk import Decoder, Stream

from streams.models import ApiToken
from tests.helpers import bearer, make_user
from workouts import fit_export
from workouts.fit import read_fit
from workouts.models import Workout
from workouts.prepare import prepare_fit
from workouts.samples import samples_from_arrays
from workouts.services import workout_create, workout_fit_job, workout_from_fit

START = dt.datetime(2026, 11, 3, 17, 0, tzinfo=dt.UTC)
HEAD_UNIT = Path(__file__).parent / "data" / "edge810-vector.fit"  # a Garmin Edge 810 with Vector pedals
COMPARED = ("t", "power", "heart_rate", "cadence")


def a_ride(n=1800, seed=3):
    """1 Hz: intervals of power, heart rate and cadence, with holes (NaN) in each channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    power = np.round(np.where((t // 120) % 2 == 0, 160.0, 290.0) + rng.normal(0, 15, n))
    hr = np.round(130 + 30 * np.sin(t / 300))
    cadence = np.round(88 + rng.normal(0, 3, n))
    power[300:312] = np.nan
    hr[50:55] = np.nan
    cadence[900:903] = np.nan
    return samples_from_arrays(t=t, power=power, heart_rate=hr, cadence=cadence, speed=np.full(n, 9.25),
                               distance=9.25 * t, altitude=100 + t / 100)


def assert_same_samples(a, b):
    for name in COMPARED:
        np.testing.assert_array_equal(a.get(name) - (a.get(name)[0] if name == "t" else 0),
                                      b.get(name) - (b.get(name)[0] if name == "t" else 0), err_msg=name)


def decoded(data: bytes) -> dict:
    """Garmin's FIT SDK: the file is FIT, its CRCs hold, and it reads without an error."""
    assert Decoder(Stream.from_byte_array(bytearray(data))).is_fit()
    assert Decoder(Stream.from_byte_array(bytearray(data))).check_integrity()
    messages, errors = Decoder(Stream.from_byte_array(bytearray(data))).read()
    assert errors == []
    return messages


async def owner_and_token(name="rider"):
    def make():
        user = make_user(name)
        return user, ApiToken.issue(user=user)[1]

    return await sync_to_async(make)()


async def exported(workout_id, token):
    response = await AsyncClient().get(f"/api/workouts/{workout_id}/fit", **bearer(token))
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/vnd.ant.fit"
    assert response["Content-Disposition"] == f'attachment; filename="workout-{workout_id}.fit"'
    return response.content


async def imported(data, token, name="back.fit"):
    response = await AsyncClient().post("/api/workouts/import", {"file": SimpleUploadedFile(name, data)},
                                        **bearer(token))
    assert response.status_code == 201, response.json()
    return await Workout.objects.aget(pk=response.json()["id"])


# --- round trips ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_an_exported_workout_imports_back_with_the_same_samples_and_np(r):
    user, token = await owner_and_token()
    workout = await sync_to_async(workout_create)(athlete=user, title="intervals", started_at=START,
                                                  samples=a_ride(), ftp=255, pauses=[(600.0, 660.0)])
    back = await imported(await exported(workout.pk, token), token)
    assert_same_samples(workout.samples, back.samples)
    assert back.started_at == START and back.ftp == 255  # zones_target carries the FTP
    assert back.pauses == [[600.0, 660.0]]
    assert back.normalized_power == workout.normalized_power
    assert (back.tss, back.avg_hr, back.avg_cadence) == (workout.tss, workout.avg_hr, workout.avg_cadence)


@pytest.mark.django_db
def test_a_head_units_file_round_trips_import_export_import():
    user = make_user("rider")
    first = workout_from_fit(HEAD_UNIT.read_bytes(), athlete=user, title="edge 810", ftp=280)
    assert first.sample_count == 4700 and first.normalized_power > 250  # the file is what we think it is
    data = fit_export.workout_fit_from_blob(bytes(first.samples_blob), laps=first.laps, pauses=first.pauses,
                                            summary=fit_summary(first))
    again = prepare_fit(data, ftp=None)
    again_samples = read_fit(data).samples
    assert_same_samples(first.samples, again_samples)
    assert again.ftp == 280 and again.started_at == first.started_at
    assert again.metrics["normalized_power"] == pytest.approx(first.normalized_power, rel=1e-9)
    for name in ("speed", "distance", "altitude"):  # at the FIT fields' resolution
        np.testing.assert_allclose(again_samples.get(name), first.samples.get(name), atol=0.2, equal_nan=True)


def fit_summary(workout):
    return workout_fit_job(workout)["summary"]


# --- Garmin's SDK reads it -----------------------------------------------------------------------
def test_garmins_sdk_decodes_the_file_with_its_records_lap_session_and_activity():
    samples = a_ride(n=600)
    summary = fit_export.FitSummary(started_at=START, ftp=250, avg_power=222.4, max_power=331, normalized_power=231.6,
                                    intensity_factor=0.926, tss=14.3, avg_hr=138.2, max_hr=160, avg_cadence=88.1,
                                    work_kj=133.4)
    data = fit_export.workout_fit(samples, summary=summary, laps=[], pauses=[(300.0, 330.0)])
    messages = decoded(data)
    records, laps, sessions = messages["record_mesgs"], messages["lap_mesgs"], messages["session_mesgs"]
    assert (len(records), len(laps), len(sessions), len(messages["activity_mesgs"])) == (600, 1, 1, 1)
    assert messages["file_id_mesgs"][0]["type"] == "activity"
    assert messages["file_id_mesgs"][0]["manufacturer"] == "development"
    assert messages["file_id_mesgs"][0]["time_created"] == START
    assert records[0]["timestamp"] == START and records[-1]["timestamp"] == START + dt.timedelta(seconds=599)
    assert records[10]["power"] == samples.get("power")[10] and records[10]["heart_rate"] == samples.get("heart_rate")[10]
    assert "power" not in records[305] and "heart_rate" in records[305]  # a hole is left out of its record
    assert records[100]["speed"] == pytest.approx(9.25) and records[100]["distance"] == pytest.approx(925)
    timer = [(e["event_type"], (e["timestamp"] - START).total_seconds()) for e in messages["event_mesgs"]]
    assert timer == [("start", 0), ("stop_all", 300), ("start", 330), ("stop_all", 600)]
    session = sessions[0]
    assert (session["total_elapsed_time"], session["total_timer_time"]) == (600, 570)
    assert (session["avg_power"], session["max_power"], session["normalized_power"]) == (222, 331, 232)
    assert (session["avg_heart_rate"], session["max_heart_rate"], session["avg_cadence"]) == (138, 160, 88)
    assert session["threshold_power"] == 250 and session["training_stress_score"] == pytest.approx(14.3)
    assert session["intensity_factor"] == pytest.approx(0.926) and session["num_laps"] == 1
    assert session["total_distance"] == pytest.approx(9.25 * 599)
    assert laps[0]["start_time"] == START and laps[0]["total_elapsed_time"] == 600
    # The one lap of a ride without laps carries the workout's own figures, not its records'.
    assert (laps[0]["max_power"], laps[0]["max_heart_rate"], laps[0]["avg_cadence"]) == (331, 160, 88)


def test_samples_within_one_second_give_one_record_the_first_and_out_of_range_values_are_left_out():
    samples = samples_from_arrays(t=[0.0, 0.4, 0.8, 1.0, 2.5, 2.9], power=[100, 101, 102, 110, 120, 121],
                                  altitude=[5.0, 5.0, 5.0, -900.0, 20000.0, 7.0])
    data = fit_export.workout_fit(samples, summary=fit_export.FitSummary(started_at=START), laps=[])
    records = decoded(data)["record_mesgs"]
    assert [((r["timestamp"] - START).total_seconds(), r["power"]) for r in records] == [(0, 100), (1, 110), (2, 120)]
    assert [r.get("altitude") for r in records] == [pytest.approx(5.0), None, None]  # below -500 m, above 12,607 m


def test_the_bulk_packed_records_are_fit_tools_own_encoding_byte_for_byte():
    samples = a_ride(n=40)
    channels = fit_export.RECORD_CHANNELS
    template = fit_export.record_template(channels)
    ms = (START.timestamp() + samples.get("t")) * 1000
    columns = {name: fit_export._rounded(name, samples.get(name)) for name in channels}
    ours = fit_export.packed_records(template, ms, columns)
    theirs = b""
    for i in range(40):
        message = RecordMessage(local_id=fit_export.RECORD_LOCAL_ID)
        message.set_definition_message(template.definition_message)
        message.timestamp = int(ms[i])
        for name in channels:
            value = columns[name][i]
            setattr(message, name, None if np.isnan(value) else (int(value) if name in fit_export.WHOLE_NUMBERS else value))
        theirs += Record.from_message(message).to_bytes()
    assert ours == theirs


# --- laps ----------------------------------------------------------------------------------------
async def marked_workout(token) -> dict:
    """A 20-minute ride with markers at 300 s and 750.5 s, created through the API: its JSON."""
    samples = a_ride(n=1200)
    body = {"title": "marked", "started_at": START.isoformat(), "markers": [[300, "one"], [750.5, "two"]],
            "samples": {k: [None if np.isnan(x) else x for x in v.tolist()] for k, v in samples.arrays.items()}}
    created = await AsyncClient().post("/api/workouts", json.dumps(body), content_type="application/json",
                                       **bearer(token))
    assert created.status_code == 201, created.content
    return created.json()


@pytest.mark.django_db(transaction=True)
async def test_a_workout_with_markers_exports_one_lap_per_lap(r):
    user, token = await owner_and_token()
    workout = await marked_workout(token)
    assert [lap["start_s"] for lap in workout["laps"]] == [0.0, 300.0, 750.5]
    laps = decoded(await exported(workout["id"], token))["lap_mesgs"]
    assert [(lap["start_time"] - START).total_seconds() for lap in laps] == [0, 300, 750]
    assert [lap["total_elapsed_time"] for lap in laps] == [300, 450.5, 449.5]
    assert [lap["avg_power"] for lap in laps] == [round(lap["avg_power"]) for lap in workout["laps"]]
    assert [lap["normalized_power"] for lap in laps] == [round(lap["np"]) for lap in workout["laps"]]
    assert [lap["message_index"] for lap in laps] == [0, 1, 2]
    # The maxima and the cadence of each lap, from its seconds (a_ride: 1 Hz, no zero cadence).
    samples, bounds = a_ride(n=1200), [(0, 300), (300, 751), (751, 1200)]
    for name, key, reduce in (("power", "max_power", np.nanmax), ("heart_rate", "max_heart_rate", np.nanmax),
                              ("cadence", "avg_cadence", np.nanmean)):
        assert [lap[key] for lap in laps] == [round(reduce(samples.get(name)[a:b])) for a, b in bounds], key


# --- the API's answers ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_a_workout_without_samples_is_a_409_naming_the_problem(r):
    user, token = await owner_and_token()
    workout = await Workout.objects.acreate(athlete=user, title="empty", started_at=START)
    response = await AsyncClient().get(f"/api/workouts/{workout.pk}/fit", **bearer(token))
    assert response.status_code == 409
    assert response.json() == {"detail": f"workout {workout.pk} has no samples: there is nothing to export as FIT"}
    missing = await AsyncClient().get("/api/workouts/999999/fit", **bearer(token))
    assert missing.status_code == 404 and missing.json() == {"detail": "workout 999999 not found"}


@pytest.mark.django_db(transaction=True)
async def test_the_openapi_schema_describes_the_fit_route(r):
    schema = (await AsyncClient().get("/api/openapi.json")).json()
    route = schema["paths"]["/api/workouts/{workout_id}/fit"]["get"]
    assert "application/vnd.ant.fit" in route["responses"]["200"]["content"]
    assert "409" in route["responses"]


# --- the admin action ----------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind, media_type", [("fit", "application/vnd.ant.fit"), ("tcx", "application/vnd.garmin.tcx+xml")])
def test_the_admin_downloads_one_workout_and_asks_for_one_of_several(kind, media_type):
    from django.test import Client

    admin = make_user("root", password="pw", superuser=True)
    first = workout_create(athlete=admin, title="a", started_at=START, samples=a_ride(n=300))
    second = workout_create(athlete=admin, title="b", started_at=START, samples=a_ride(n=60))
    client = Client()
    client.force_login(admin)
    url = "/admin/workouts/workout/"
    one = client.post(url, {"action": f"download_{kind}", "_selected_action": [first.pk]})
    assert one.status_code == 200 and one["Content-Type"] == media_type
    assert one["Content-Disposition"] == f'attachment; filename="workout-{first.pk}.{kind}"'
    if kind == "fit":
        assert len(decoded(one.content)["record_mesgs"]) == 300
    else:
        assert one.content.count(b"<Trackpoint>") == 300
    several = client.post(url, {"action": f"download_{kind}", "_selected_action": [first.pk, second.pk]}, follow=True)
    assert several.status_code == 200
    assert f"Select one workout to download as {kind.upper()}" in several.content.decode()
