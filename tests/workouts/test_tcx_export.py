"""TCX export (GET /api/workouts/{id}/tcx; the admin's "Download as TCX" is tested beside
"Download as FIT", tests/workouts/test_fit_export.py): a TCX reader
(tcxreader) reads back the workout's samples, laps and totals; elements follow the order of
Garmin's TrainingCenterDatabase v2 schema; the same owner rule and errors as the FIT file."""

import datetime as dt
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from django.test import AsyncClient
from tcxreader.tcxreader import TCXReader

from tests.helpers import bearer
from tests.workouts.test_fit_export import (
    START,
    a_ride,
    decoded,
    marked_workout,
    owner_and_token,
)
from workouts import fit_export, tcx_export
from workouts.fit_export import FitSummary
from workouts.models import Workout
from workouts.samples import samples_from_arrays
from workouts.services import workout_create

NS = {"tc": tcx_export.TCX_NS, "x": tcx_export.EXT_NS}
# The sequences of TrainingCenterDatabase v2's ActivityLap_t and Trackpoint_t (a reader may
# rely on the order: the schema is a sequence).
LAP_ORDER = ["TotalTimeSeconds", "DistanceMeters", "MaximumSpeed", "Calories", "AverageHeartRateBpm",
             "MaximumHeartRateBpm", "Intensity", "Cadence", "TriggerMethod", "Track", "Notes", "Extensions"]
TPX_ORDER = ["Speed", "RunCadence", "Watts"]  # ActivityExtension v2's ActivityTrackpointExtension_t
POINT_ORDER = ["Time", "Position", "AltitudeMeters", "DistanceMeters", "HeartRateBpm", "Cadence", "SensorState",
               "Extensions"]


def read(data: bytes, tmp_path):
    path = tmp_path / "ride.tcx"
    path.write_bytes(data)
    return TCXReader().read(str(path), only_gps=False)


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def assert_in_schema_order(element, order):
    tags = [local(child.tag) for child in element]
    assert tags == sorted(tags, key=order.index), tags


def summary(**extra):
    return FitSummary(started_at=START, ftp=250, avg_power=222.4, max_power=331, normalized_power=231.6, avg_hr=138.2,
                      max_hr=160, avg_cadence=88.1, work_kj=133.4, **extra)


def test_a_reader_gets_every_second_back_with_power_hr_cadence_speed_and_distance(tmp_path):
    samples = a_ride(n=600)
    data = tcx_export.workout_tcx(samples, summary=summary(), laps=[], title="Tuesday <threshold> & co")
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    tcx = read(data, tmp_path)
    points = tcx.trackpoints
    assert len(points) == 600 and tcx.activity_type == "Biking"
    assert [p.time for p in points] == [(START + dt.timedelta(seconds=k)).replace(tzinfo=None) for k in range(600)]
    for name, read_back in (("power", lambda p: p.tpx_ext.get("Watts")), ("heart_rate", lambda p: p.hr_value),
                            ("cadence", lambda p: p.cadence)):
        expected = [None if np.isnan(v) else v for v in samples.get(name)]
        assert [read_back(p) for p in points] == expected, name  # holes stay holes
    assert points[100].tpx_ext["Speed"] == pytest.approx(9.25) and points[100].distance == pytest.approx(925)
    assert points[100].elevation == pytest.approx(101.0)
    root = ET.fromstring(data)
    assert root.find("tc:Activities/tc:Activity/tc:Notes", NS).text == "Tuesday <threshold> & co"
    assert root.find("tc:Activities/tc:Activity/tc:Id", NS).text == "2026-11-03T17:00:00Z"


def test_one_lap_carries_the_rides_totals_and_a_pause_splits_its_track(tmp_path):
    samples = a_ride(n=600)
    data = tcx_export.workout_tcx(samples, summary=summary(), laps=[], pauses=[(300.0, 330.0)])
    root = ET.fromstring(data)
    (lap,) = root.findall("tc:Activities/tc:Activity/tc:Lap", NS)
    assert lap.get("StartTime") == "2026-11-03T17:00:00Z"
    assert float(lap.find("tc:TotalTimeSeconds", NS).text) == 570  # 600 s less the 30 s pause
    assert float(lap.find("tc:DistanceMeters", NS).text) == pytest.approx(9.25 * 599)
    assert lap.find("tc:AverageHeartRateBpm/tc:Value", NS).text == "138"
    assert int(lap.find("tc:MaximumHeartRateBpm/tc:Value", NS).text) == np.nanmax(samples.get("heart_rate"))
    assert lap.find("tc:Cadence", NS).text == "88"  # the workout's 88.1, as the FIT file's lap
    assert lap.find("tc:Calories", NS).text == "133"  # the workout's work, 133.4 kJ
    assert lap.find("tc:Extensions/x:LX/x:AvgWatts", NS).text == "222"
    assert int(lap.find("tc:Extensions/x:LX/x:MaxWatts", NS).text) == np.nanmax(samples.get("power"))
    tracks = lap.findall("tc:Track", NS)
    assert [len(t) for t in tracks] == [330, 270]  # the track after the pause starts at its end
    assert tracks[1][0].find("tc:Time", NS).text == "2026-11-03T17:05:30Z"
    assert_in_schema_order(lap, LAP_ORDER)
    for point in tracks[0][:20]:
        assert_in_schema_order(point, POINT_ORDER)
    assert read(data, tmp_path).calories == int(lap.find("tc:Calories", NS).text)


def test_samples_within_one_second_give_one_trackpoint_and_values_out_of_range_are_left_out(tmp_path):
    samples = samples_from_arrays(t=[0.0, 0.4, 1.0, 2.0], power=[100, 101, 70000, 120], heart_rate=[0, 120, 300, 121],
                                  cadence=[80, 81, 255, 90])
    data = tcx_export.workout_tcx(samples, summary=FitSummary(started_at=START), laps=[])
    points = read(data, tmp_path).trackpoints
    assert [(p.tpx_ext.get("Watts"), p.hr_value, p.cadence) for p in points] == [
        (100, None, 80), (None, None, None), (120, 121, 90)]  # HR 0, 300 W... not what the elements hold


def test_what_xml_cannot_hold_or_a_double_cannot_sum_is_left_out(tmp_path):
    samples = samples_from_arrays(t=[0.0, 1.0, 2.0], power=[1e308, 200, 1e308], speed=[1e308, 5.0, 1e308])
    data = tcx_export.workout_tcx(samples, summary=FitSummary(started_at=START, work_kj=float("inf")), laps=[],
                                  title="bell\x07 and\x1b escape\ufffe")
    root = ET.fromstring(data)  # well-formed
    assert root.find("tc:Activities/tc:Activity/tc:Notes", NS).text == "bell and escape"
    points = read(data, tmp_path).trackpoints
    assert [(p.tpx_ext.get("Watts"), p.tpx_ext.get("Speed")) for p in points] == [(None, None), (200, 5), (None, None)]
    lap = root.find("tc:Activities/tc:Activity/tc:Lap", NS)
    assert lap.find("tc:Calories", NS).text == "0" and lap.find("tc:MaximumSpeed", NS).text == "5"


def test_calories_are_the_laps_work_whatever_the_sampling(tmp_path):
    """A head unit's smart recording: a sample every 5 s, an hour at 200 W (720 kJ)."""
    samples = samples_from_arrays(t=np.arange(0.0, 3600.0, 5.0), power=np.full(720, 200.0))
    whole = tcx_export.workout_tcx(samples, summary=FitSummary(started_at=START, work_kj=720.0), laps=[])
    assert ET.fromstring(whole).find(".//tc:Lap/tc:Calories", NS).text == "720"
    laps = [{"start_s": 0.0, "end_s": 1800.0, "avg_power": 200.0, "moving_s": 1800},
            {"start_s": 1800.0, "end_s": 3600.0, "avg_power": 200.0, "moving_s": 1800}]
    split = tcx_export.workout_tcx(samples, summary=FitSummary(started_at=START), laps=laps)
    assert [e.text for e in ET.fromstring(split).findall(".//tc:Lap/tc:Calories", NS)] == ["360", "360"]


def test_a_laps_cadence_leaves_coasting_out(tmp_path):
    """Marker laps: each lap's cadence is its seconds' mean without zeros (a minute of coasting
    in the first lap does not pull it down), as the FIT file's laps."""
    samples = a_ride(n=600)
    cadence = samples.get("cadence")
    cadence[100:160] = 0
    laps = [{"start_s": 0.0, "end_s": 300.0}, {"start_s": 300.0, "end_s": 600.0}]
    root = ET.fromstring(tcx_export.workout_tcx(samples, summary=summary(), laps=laps))
    first = cadence[:300]
    expected = [round(np.nanmean(first[first != 0])), round(np.nanmean(cadence[300:]))]
    assert [int(e.text) for e in root.findall(".//tc:Lap/tc:Cadence", NS)] == expected
    assert expected[0] != round(np.nanmean(first))  # the zeros would have counted
    fit = fit_export.workout_fit(samples, summary=summary(), laps=laps)
    assert [lap["avg_cadence"] for lap in decoded(fit)["lap_mesgs"]] == expected


def test_the_last_lap_holds_the_last_trackpoint_and_a_run_has_run_cadence(tmp_path):
    t = 0.75 + np.arange(100) * 0.25  # 4 Hz from a fractional start: the last second ends past the lap
    samples = samples_from_arrays(t=t, cadence=np.full(100, 85.0), heart_rate=np.full(100, 150.0))
    laps = [{"start_s": 0.0, "end_s": 12.0}, {"start_s": 12.0, "end_s": 25.0}]
    data = tcx_export.workout_tcx(samples, summary=FitSummary(started_at=START, sport="running"), laps=laps)
    root = ET.fromstring(data)
    assert len(root.findall(".//tc:Trackpoint", NS)) == len(set(np.floor(t).tolist())) == 26
    assert root.find(".//tc:Trackpoint/tc:Cadence", NS) is None  # a bike's crank cadence: not a run's
    assert {e.text for e in root.findall(".//x:TPX/x:RunCadence", NS)} == {"85"}
    assert root.find(".//tc:Lap/tc:Cadence", NS) is None
    assert [e.text for e in root.findall(".//x:LX/x:AvgRunCadence", NS)] == ["85", "85"]
    assert root.find("tc:Activities/tc:Activity", NS).get("Sport") == "Running"
    for point in root.findall(".//tc:Trackpoint", NS):
        assert_in_schema_order(point, POINT_ORDER)
        for tpx in point.findall("tc:Extensions/x:TPX", NS):
            assert_in_schema_order(tpx, TPX_ORDER)


@pytest.mark.django_db(transaction=True)
async def test_a_workout_with_markers_exports_one_lap_per_lap_with_its_own_power(r, tmp_path):
    user, token = await owner_and_token()
    workout = await marked_workout(token)
    response = await AsyncClient().get(f"/api/workouts/{workout['id']}/tcx", **bearer(token))
    laps = ET.fromstring(response.content).findall("tc:Activities/tc:Activity/tc:Lap", NS)
    assert [lap.get("StartTime")[-9:] for lap in laps] == ["17:00:00Z", "17:05:00Z", "17:12:30Z"]
    assert [float(lap.find("tc:TotalTimeSeconds", NS).text) for lap in laps] == [300, 450.5, 449.5]
    assert [lap.find("tc:Extensions/x:LX/x:AvgWatts", NS).text for lap in laps] == [
        str(round(lap["avg_power"])) for lap in workout["laps"]]
    assert [len(lap.findall("tc:Track/tc:Trackpoint", NS)) for lap in laps] == [300, 451, 449]
    assert len(read(response.content, tmp_path).trackpoints) == 1200


# --- the API's answers ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_the_api_answers_the_file_to_its_readers_and_409_without_samples(r, tmp_path):
    user, token = await owner_and_token()
    workout = await Workout.objects.acreate(athlete=user, title="empty", started_at=START)
    empty = await AsyncClient().get(f"/api/workouts/{workout.pk}/tcx", **bearer(token))
    assert empty.status_code == 409
    assert empty.json() == {"detail": f"workout {workout.pk} has no samples: there is nothing to export as TCX"}
    missing = await AsyncClient().get("/api/workouts/999999/tcx", **bearer(token))
    assert missing.status_code == 404 and missing.json() == {"detail": "workout 999999 not found"}
    from asgiref.sync import sync_to_async

    ride = await sync_to_async(workout_create)(athlete=user, title="ride", started_at=START, samples=a_ride(n=120))
    response = await AsyncClient().get(f"/api/workouts/{ride.pk}/tcx", **bearer(token))
    assert response.status_code == 200 and response["Content-Type"] == "application/vnd.garmin.tcx+xml"
    assert response["Content-Disposition"] == f'attachment; filename="workout-{ride.pk}.tcx"'
    assert len(read(response.content, tmp_path).trackpoints) == 120
    schema = (await AsyncClient().get("/api/openapi.json")).json()
    route = schema["paths"]["/api/workouts/{workout_id}/tcx"]["get"]
    assert "application/vnd.garmin.tcx+xml" in route["responses"]["200"]["content"] and "409" in route["responses"]
