import datetime as dt
import json
import math

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import AsyncClient

from streams.access.identity import Actor
from streams.store import services as store
from tests.helpers import bearer, key, make_user, user_with_token
from tests.workouts.fitwriter import write_fit
from workouts import metrics as M
from workouts.models import Workout
from workouts.rides.simulate import simulate_ride
from workouts.samples import SamplesError, samples_from_columns
from workouts.services import workout_create, workout_from_fit, workout_save

START = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


def ride_columns(duration=1800, seed=1):
    ride = simulate_ride(duration=duration, seed=seed)
    return {k: [None if math.isnan(x) else x for x in v.tolist()] for k, v in ride.items()}


@pytest.fixture
def rider(db):
    return get_user_model().objects.create_user("rider", password="pw")


@pytest.fixture
def staff(db):
    return make_user("coach", superuser=True)


# --- services: computed on save through every path ----------------------------------------
def test_service_save_computes_metrics_and_recomputes_on_ftp_change(rider):
    cols = ride_columns()
    w = workout_create(athlete=rider, title="t", started_at=START, samples=samples_from_columns(cols), ftp=250)
    arr = {k: np.array([np.nan if v is None else v for v in vals]) for k, vals in cols.items()}
    expected = M.ride_metrics(arr["t"], arr["power"], arr["heart_rate"], arr["cadence"], ftp=250)
    w.refresh_from_db()
    assert w.normalized_power == pytest.approx(expected.normalized_power)
    assert w.tss == pytest.approx(expected.tss) and w.metrics_version == M.METRICS_VERSION
    w.ftp = 300
    workout_save(w)
    w.refresh_from_db()
    assert w.intensity_factor == pytest.approx(expected.normalized_power / 300)


def test_samples_round_trip_compactly(rider):
    cols = ride_columns(duration=14400)
    w = workout_create(athlete=rider, title="4h", started_at=START, samples=samples_from_columns(cols))
    w = Workout.objects.get(pk=w.pk)
    assert w.sample_count == 14400
    assert len(w.samples_blob) < 14400 * 7 * 4  # under float32 size, uncompressed
    back = w.samples.to_lists()
    assert back["t"] == cols["t"]
    assert [v is None for v in back["power"]] == [v is None for v in cols["power"]]  # gaps stay gaps
    assert any(v is None for v in cols["power"]) and any(v is not None for v in cols["power"])
    kept = [(b, c) for b, c in zip(back["power"], cols["power"]) if c is not None]
    assert [b for b, _ in kept] == pytest.approx([c for _, c in kept], rel=1e-6)


@pytest.mark.parametrize(
    "columns,needle",
    [
        ({"power": [1]}, "samples.t"),
        ({"t": [0, 1], "power": [1]}, "samples.power has 1 values"),
        ({"t": [0, 2, 1]}, "t must increase: t[2]"),
        ({"t": [0, 1], "power": [1, -5]}, "samples.power[1]=-5 is negative"),
        ({"t": [0, 1], "power": [1, "x"]}, "samples.power[1]='x' is not a number"),
        ({"t": [0, 1], "power": [1, float("nan")]}, "samples.power[1]=nan is not finite"),
        ({"t": [0, 1], "power": [1, float("inf")]}, "samples.power[1]=inf is not finite"),
        ({"t": [0, 1], "power": [1, 10**400]}, "samples.power[1] is too large"),  # JSON allows it
        ({"t": [0, 1], "power": [True, 1]}, "samples.power[0]=True is not a number"),
        ({"t": [0, 1], "watts": [1, 2]}, "unknown sample channels: watts"),
        ({"t": []}, "empty"),
    ],
)
def test_sample_validation_names_channel_and_index(columns, needle):
    with pytest.raises(SamplesError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        samples_from_columns(columns)


def test_admin_save_and_recompute_action_agree_with_api(client, staff, rider):
    cols = ride_columns(duration=900)
    w = workout_create(athlete=rider, title="ride", started_at=START, samples=samples_from_columns(cols), ftp=200)
    np_before = w.normalized_power
    Workout.objects.filter(pk=w.pk).update(normalized_power=1.0, metrics_version=0)  # stale
    client.force_login(staff)
    resp = client.post("/admin/workouts/workout/", {"action": "recompute_metrics", "_selected_action": [w.pk]}, follow=True)
    assert resp.status_code == 200
    w.refresh_from_db()
    assert w.normalized_power == pytest.approx(np_before) and w.metrics_version == M.METRICS_VERSION
    page = client.get(f"/admin/workouts/workout/{w.pk}/change/")
    assert page.status_code == 200 and b"<svg" in page.content and b"polyline" in page.content
    # editing through the admin form recomputes too (FTP change)
    data = {"title": "ride", "athlete": rider.pk, "started_at_0": "2026-11-01", "started_at_1": "08:00:00",
            "sport": "cycling", "ftp": 250, "source": "admin", "notes": "", "pauses": "[]"}
    resp = client.post(f"/admin/workouts/workout/{w.pk}/change/", data)
    assert resp.status_code == 302, resp.content[:2000]
    w.refresh_from_db()
    assert w.intensity_factor == pytest.approx(np_before / 250)


def test_athlete_profiles_in_the_admin(client, staff, rider):
    client.force_login(staff)
    resp = client.post("/admin/workouts/athleteprofile/add/",
                       {"athlete": rider.pk, "ftp": 265, "max_heart_rate": 188, "weight_kg": "71.5"})
    assert resp.status_code == 302, resp.content[:2000]
    assert client.get("/admin/workouts/athleteprofile/").status_code == 200
    bad = client.post("/admin/workouts/athleteprofile/add/", {"athlete": staff.pk, "ftp": 5000})
    assert bad.status_code == 200 and b"2000" in bad.content  # the form names the limit


def test_recompute_command_outdated(rider):
    w = workout_create(athlete=rider, title="r", started_at=START, samples=samples_from_columns(ride_columns(600)))
    Workout.objects.filter(pk=w.pk).update(metrics_version=0, normalized_power=None)
    call_command("recompute_metrics", "--outdated")
    w.refresh_from_db()
    assert w.metrics_version == M.METRICS_VERSION and w.normalized_power is not None


# --- FIT ---------------------------------------------------------------------------------
def fit_rows(n=900, pause=None):
    rows = []
    for i in range(n):
        t = float(i)
        if pause and pause[0] <= t < pause[1]:
            continue
        rows.append({"t": t, "power": 200 + (i % 30), "heart_rate": 140, "cadence": 90, "speed": 8.5,
                     "distance": 8.5 * i, "altitude": 120.0})
    return rows


def test_import_fit_command_with_pause_and_file_ftp(tmp_path, rider):
    data = write_fit(START, fit_rows(1200), ftp=260, timer=[("start", 0), ("stop", 600), ("start", 900)])
    path = tmp_path / "ride.fit"
    path.write_bytes(data)
    call_command("import_fit", str(path), "--athlete", "rider")
    w = Workout.objects.get()
    assert w.source == "fit" and w.ftp == 260 and w.started_at == START
    assert w.pauses == [[600.0, 900.0]]
    assert w.moving_time_s == 900  # 1200 s recorded, 300 s paused
    assert w.avg_hr == pytest.approx(140) and w.sample_count == 1200
    s = w.samples
    assert s.get("speed")[10] == pytest.approx(8.5, rel=1e-3)


def test_profile_ftp_is_the_default_of_new_workouts_only(rider):
    from workouts.models import AthleteProfile

    AthleteProfile.objects.create(athlete=rider, ftp=280, weight_kg=68)
    samples = samples_from_columns(ride_columns())
    defaulted = workout_create(athlete=rider, title="a", started_at=START, samples=samples)
    given = workout_create(athlete=rider, title="b", started_at=START, samples=samples, ftp=250)
    assert (defaulted.ftp, given.ftp) == (280, 250)
    assert defaulted.intensity_factor == pytest.approx(defaulted.normalized_power / 280)
    assert defaulted.tss == pytest.approx(given.tss * (250 / 280) ** 2)  # TSS ∝ IF²
    data = write_fit(START, fit_rows(900))  # a FIT file without its own FTP: the profile's
    fit = workout_from_fit(data, athlete=rider, title="fit")
    assert fit.ftp == 280 and fit.intensity_factor == pytest.approx(fit.normalized_power / 280)


def test_corrupt_and_non_fit_files_fail_cleanly(tmp_path, rider):
    good = write_fit(START, fit_rows(100))
    bad = tmp_path / "bad.fit"
    bad.write_bytes(good[:-40] + b"\x00" * 40)
    text = tmp_path / "notes.txt"
    text.write_text("not a fit file at all")
    with pytest.raises(Exception, match="2 of 2 files"):
        call_command("import_fit", str(bad), str(text), "--athlete", "rider")
    assert Workout.objects.count() == 0


# --- API ---------------------------------------------------------------------------------
pytest_async = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def api_token(r):
    return (await user_with_token("api-rider"))[1]


auth = bearer


@pytest_async
async def test_api_create_list_get(api_token, settings):
    settings.STREAMS_PUBLIC_READ = True
    c = AsyncClient()
    body = {"title": "Tuesday intervals", "started_at": "2026-11-03T17:00:00Z", "ftp": 250, "samples": ride_columns(1200)}
    resp = await c.post("/api/workouts", json.dumps(body), content_type="application/json", **auth(api_token))
    assert resp.status_code == 201, resp.content
    created = resp.json()
    assert created["athlete"] == "api-rider" and created["normalized_power"] > 0 and created["tss"] > 0
    assert (await c.get("/api/workouts")).status_code == 401  # workouts are never public
    listing = (await c.get("/api/workouts?athlete=api-rider&since=2026-11-01T00:00:00Z", **auth(api_token))).json()
    assert listing["count"] == 1 and listing["workouts"][0]["id"] == created["id"]
    assert (await c.get("/api/workouts?until=2026-11-01T00:00:00Z", **auth(api_token))).json()["count"] == 0
    one = (await c.get(f"/api/workouts/{created['id']}?samples=true", **auth(api_token))).json()
    assert len(one["samples"]["t"]) == 1200
    assert (await c.get("/api/workouts/999999", **auth(api_token))).status_code == 404
    assert (await c.get(f"/api/workouts?offset={2**31 - 1}", **auth(api_token))).json()["workouts"] == []
    resp = await c.get(f"/api/workouts?offset={10**23}", **auth(api_token))  # no SQL OFFSET that large
    assert resp.status_code == 400 and "offset" in resp.json()["detail"]
    resp = await c.get("/api/workouts?athlete=a%00b", **auth(api_token))  # PostgreSQL cannot store NUL
    assert resp.status_code == 400 and "NUL" in resp.json()["detail"]


@pytest_async
@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0]}}, 400, "title"),
        ({"title": "x", "started_at": "yesterday", "samples": {"t": [0]}}, 400, "started_at"),
        ({"title": "x", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0, 1], "power": [1, -1]}}, 400, "power[1]"),
        ({"title": "x", "started_at": "2026-11-03T17:00:00Z", "ftp": -3, "samples": {"t": [0]}}, 400, "ftp"),
        ({"title": "x", "started_at": "2026-11-03T17:00:00Z", "athlete": "someone-else", "samples": {"t": [0]}}, 403, "workouts.add_workout"),
        # PostgreSQL cannot store NUL: these were 500s there
        ({"title": "a\u0000b", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0]}}, 400, "title must not contain NUL"),
        ({"title": "x", "notes": "\u0000", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0]}}, 400, "notes"),
        ({"title": "x", "athlete": "a\u0000", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0]}}, 400, "athlete"),
        ({"title": "x" * 201, "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0]}}, 400, "longer than 200"),
    ],
)
async def test_api_create_rejects_bad_input(api_token, body, status, needle):
    resp = await AsyncClient().post("/api/workouts", json.dumps(body), content_type="application/json", **auth(api_token))
    assert resp.status_code == status
    assert needle in resp.json()["detail"]


@pytest_async
async def test_api_nan_power_is_400_naming_index(api_token):
    raw = '{"title": "x", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0, 1, 2], "power": [1, 2, NaN]}}'
    resp = await AsyncClient().post("/api/workouts", raw, content_type="application/json", **auth(api_token))
    assert resp.status_code == 400 and "samples.power[2]" in resp.json()["detail"]


@pytest_async
async def test_archive_stream_matches_posting_the_same_samples(api_token, settings):
    settings.STREAMS_PUBLIC_READ = True
    ride = simulate_ride(duration=900, seed=9)
    entries = []
    for i in range(ride["t"].size):
        fields = {"t": f"{ride['t'][i]:.3f}"}
        for k in ("power", "heart_rate", "cadence"):
            if not math.isnan(ride[k][i]):
                fields[k] = f"{ride[k][i]:g}"
        entries.append(fields)
    rider = await get_user_model().objects.aget(username="api-rider")
    for i in range(0, len(entries), 500):
        await store.stream_publish(name="ride-9", entries=entries[i : i + 500],
                                        actor=Actor(user_id=rider.pk, username="api-rider"))
    c = AsyncClient()
    resp = await c.post("/api/streams/ride-9/archive", {"ftp": 250, "delete_stream": True, "force": True},
                        content_type="application/json", **auth(api_token))
    assert resp.status_code == 201, resp.content
    archived = resp.json()
    cols = {k: [None if math.isnan(x) else float(f"{x:g}") for x in ride[k].tolist()] for k in ("power", "heart_rate", "cadence")}
    cols["t"] = [float(f"{x:.3f}") for x in ride["t"].tolist()]
    body = {"title": "posted", "started_at": "2026-11-03T17:00:00Z", "ftp": 250, "samples": cols}
    posted = (await c.post("/api/workouts", json.dumps(body), content_type="application/json", **auth(api_token))).json()
    for field in ("normalized_power", "tss", "avg_power", "moving_time_s", "avg_hr", "peak_5min"):
        assert archived[field] == pytest.approx(posted[field], rel=1e-5), field
    assert await store.streams_exist(names=["ride-9"]) == {"ride-9": False}
    resp = await c.post("/api/streams/ride-9/archive", {"force": True}, content_type="application/json", **auth(api_token))
    assert resp.status_code == 404


@pytest_async
async def test_api_fit_upload_and_corrupt_upload(api_token):
    from django.core.files.uploadedfile import SimpleUploadedFile

    c = AsyncClient()
    data = write_fit(START, fit_rows(600), ftp=240)
    resp = await c.post("/api/workouts/import", {"file": SimpleUploadedFile("a.fit", data)}, **auth(api_token))
    assert resp.status_code == 201, resp.content
    assert resp.json()["ftp"] == 240 and resp.json()["source"] == "fit"
    resp = await c.post("/api/workouts/import", {"file": SimpleUploadedFile("b.fit", b"garbage" * 10)}, **auth(api_token))
    assert resp.status_code == 400 and "b.fit" in resp.json()["detail"]
    # Found by schemathesis: a multipart body without a boundary was an empty 400 from Django.
    resp = await c.post("/api/workouts/import", b"garbage", content_type="multipart/form-data", **auth(api_token))
    assert resp.status_code == 400 and "multipart" in resp.json()["detail"], resp.content
    resp = await c.post("/api/workouts/import", b"garbage", content_type="multipart/form-data; boundary=x", **auth(api_token))
    assert resp.status_code == 400 and "file" in resp.json()["detail"], resp.content
    assert await Workout.objects.acount() == 1


@pytest_async
async def test_large_workout_bodies_are_allowed_up_to_their_own_limit(api_token, settings):
    body = json.dumps({"title": "long", "started_at": "2026-11-03T17:00:00Z", "samples": ride_columns(20000)})
    assert len(body) > settings.STREAMS_MAX_BODY  # over the streams API's 1 MiB
    resp = await AsyncClient().post("/api/workouts", body, content_type="application/json", **auth(api_token))
    assert resp.status_code == 201
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    resp = await AsyncClient().post("/api/workouts", body, content_type="application/json", **auth(api_token))
    assert resp.status_code == 413 and "1 MiB" in resp.json()["detail"]


@pytest.mark.django_db(transaction=True)  # the command saves from its own event-loop thread
def test_archive_stream_command_reads_in_chunks_and_deletes(r_sync_stream):
    get_user_model().objects.create_user("rider")
    call_command("archive_stream", "cmd-ride", "--athlete", "rider", "--delete", "--force")
    w = Workout.objects.get(source="stream")
    assert w.sample_count == 12000 and w.normalized_power is not None
    assert r_sync_stream.exists(key("cmd-ride")) == 0


@pytest.fixture
def r_sync_stream(sync_r):
    pipe = sync_r.pipeline(transaction=False)
    for i in range(12000):  # more than two archive chunks of 5,000
        pipe.xadd(key("cmd-ride"), {"t": str(i), "power": str(150 + i % 100)})
    pipe.execute()
    return sync_r


def test_simulate_ride_publishes_a_realistic_ride(r_sync_stream):
    from workouts.rides.simulate import simulate_ride as ride_arrays

    call_command("simulate_ride", "sim-ride", "--duration", "600", "--speedup", "0", "--seed", "3")
    *entries, (_, end) = r_sync_stream.xrange(key("sim-ride"))
    assert len(entries) == 600
    assert end.get("_end") == "owner"  # the ride is ended when the simulator is done (docs/rides.md)
    fields = entries[100][1]
    assert {"t", "heart_rate", "cadence", "speed", "distance", "altitude"} <= set(fields)
    ride = ride_arrays(duration=600, seed=3)
    assert float(fields["t"]) == 100.0 and float(fields["heart_rate"]) == ride["heart_rate"][100]
    powers = [float(f["power"]) for _, f in entries if "power" in f]
    assert 0.0 in powers  # coasting zeros are published
    assert len(powers) < 600  # and so are dropouts (no power field)


def test_simulate_ride_rejects_bad_arguments(db):
    with pytest.raises(Exception, match="invalid stream name"):
        call_command("simulate_ride", "no spaces")
    with pytest.raises(Exception, match="--hz"):
        call_command("simulate_ride", "ok", "--hz", "0")


@pytest_async
async def test_workout_bodies_and_fit_files_are_prepared_in_a_worker_process(api_token, monkeypatch):
    """json.loads holds the GIL: a thread would still stall every live listener, so the
    parse, validation, metrics and encoding run in another process."""
    import os

    from streams.core import offload

    ran = []
    original = offload.run

    async def recording(fn, *args, **kwargs):
        ran.append((fn.__name__, await original(os.getpid)))
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(offload, "run", recording)
    body = {"title": "t", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0, 1], "power": [100, 110]}}
    resp = await AsyncClient().post("/api/workouts", json.dumps(body), content_type="application/json", **auth(api_token))
    assert resp.status_code == 201, resp.content
    assert resp.json()["avg_power"] == pytest.approx(105)
    fit = await AsyncClient().post("/api/workouts/import", {"file": SimpleUploadedFile("r.fit", write_fit(START, fit_rows(60), ftp=240))}, **auth(api_token))
    assert fit.status_code == 201, fit.content
    assert [name for name, _ in ran] == ["prepare_json", "prepare_fit"]
    assert all(pid != os.getpid() for _, pid in ran)


@pytest_async
async def test_a_worker_that_dies_fails_its_request_with_503_and_the_next_one_works(api_token):
    import os
    import signal

    from streams.core import offload

    pid = await offload.run(os.getpid)
    os.kill(pid, signal.SIGKILL)
    body = {"title": "t", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0, 1], "power": [100, 110]}}
    first = await AsyncClient().post("/api/workouts", json.dumps(body), content_type="application/json", **auth(api_token))
    assert first.status_code == 503 and "worker process" in first.json()["detail"]
    again = await AsyncClient().post("/api/workouts", json.dumps(body), content_type="application/json", **auth(api_token))
    assert again.status_code == 201, again.content
