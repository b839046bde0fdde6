"""Late samples are placed by ride time (issue 25, docs/rides.md "Late samples"): a device that
sends newer samples before its back-fill of a dropout gets the live metrics, the live chart and
the archive of an uninterrupted ride of the same samples.

Each test rides the same samples twice: a control stream in order, and a stream whose samples
120-179 arrive after 180-299 (with a repeat of an earlier second, which the first one wins)."""

import math

import numpy as np
import pytest
from asgiref.sync import sync_to_async

from tests.streams.sse_client import SSEClient
from tests.workouts.test_ride_tracking import athlete, get_metrics, next_metrics, publish_all, ride_entries  # noqa: F401
from workouts.models import DERIVED_FIELDS, Workout
from workouts.rides.archive import EntryReader, placed, workout_from_stream

pytestmark = pytest.mark.django_db(transaction=True)

DURATION = 300
LATE = slice(120, 180)  # the dropout the device back-fills after it is back

# What differs between two streams of the same ride (their names and ids), and the chart,
# compared on its own.
NOT_THE_RIDE = {"name", "last_id", "last_entry_ms", "chart", "chart_reset"}


def late_order(entries: list[dict]) -> list[dict]:
    """The ride as a device back-filling a dropout sends it: before, after, then the dropout;
    and second 100 once more with other values (a repeat: the first one counts)."""
    repeat = {**entries[100], "power": "999", "hr": "199"}
    return entries[: LATE.start] + entries[LATE.stop:] + entries[LATE] + [repeat]


def ride_of(snapshot: dict) -> dict:
    return {key: value for key, value in snapshot.items() if key not in NOT_THE_RIDE}


def test_placed_sorts_by_time_and_keeps_the_first_of_a_time():
    t = np.array([0.0, 1.0, 4.0, 2.0, 3.0, 1.0, 5.0])
    power = np.array([10.0, 11.0, 14.0, 12.0, 13.0, 99.0, 15.0])
    out = placed({"t": t, "power": power})
    assert out["t"].tolist() == [0, 1, 2, 3, 4, 5]
    assert out["power"].tolist() == [10, 11, 12, 13, 14, 15]  # second 1: the one that came first


def test_the_reader_counts_a_late_sample_and_drops_a_repeat_of_the_latest():
    reader = EntryReader()
    kept = [reader.sample(f"{1000 + k}-0", {"t": str(t), "power": "200"}) for k, t in enumerate([0, 1, 2, 2, 1.5])]
    assert [s and s["t"] for s in kept] == [0, 1, 2, None, None]  # the repeat, and the late one (live)
    assert reader.late == 1
    assert reader.sample("2000-0", {"t": "0.5", "power": "1"}, keep_late=True)["t"] == 0.5  # the archive's
    assert reader.late == 2 and reader.last_t == 2


async def test_the_archive_of_a_back_filled_ride_equals_the_uninterrupted_one(athlete):  # noqa: F811
    user, _, actor = athlete
    _, entries = ride_entries(duration=DURATION)
    await publish_all("control", entries, actor)
    await publish_all("backfilled", late_order(entries), actor)
    control = await workout_from_stream(name="control", athlete=user, force=True)
    backfilled = await workout_from_stream(name="backfilled", athlete=user, force=True)
    for field in DERIVED_FIELDS:
        assert getattr(backfilled, field) == getattr(control, field), field
    stored = await sync_to_async(lambda: [Workout.objects.get(pk=w.pk).samples.arrays for w in (control, backfilled)])()
    assert stored[0].keys() == stored[1].keys()
    for channel, values in stored[0].items():
        np.testing.assert_array_equal(stored[1][channel], values, err_msg=channel)


async def test_live_metrics_of_a_catch_up_with_late_samples_equal_the_uninterrupted_ride(athlete):  # noqa: F811
    _, token, actor = athlete
    _, entries = ride_entries(duration=DURATION)
    await publish_all("control", entries, actor)
    await publish_all("backfilled", late_order(entries), actor)
    status, control = await get_metrics(token, "control")
    assert status == 200 and control["samples"] == DURATION
    status, backfilled = await get_metrics(token, "backfilled")
    assert status == 200
    assert ride_of(backfilled) == ride_of(control)


async def test_a_viewer_sees_the_back_fill_placed_and_gets_the_whole_chart_again(athlete, open_clients):  # noqa: F811
    _, token, actor = athlete
    auth = {"Authorization": f"Bearer {token}"}
    _, entries = ride_entries(duration=DURATION)
    await publish_all("control", entries, actor)
    sent = late_order(entries)
    await publish_all("backfilled", sent[: DURATION - (LATE.stop - LATE.start)], actor)  # before the back-fill
    viewer = await SSEClient("/api/streams/backfilled/metrics/sse", headers=auth).connect()
    open_clients.append(viewer)
    first = (await next_metrics(viewer)).json()
    assert first["chart_reset"] is True and first["samples"] == DURATION - 60
    seconds = [point[0] for point in first["chart"]]
    assert 150 not in seconds and seconds[-1] == DURATION - 1  # the dropout: a hole in the chart

    await publish_all("backfilled", sent[DURATION - 60:], actor)  # the back-fill, and a repeat
    placed_event = await next_metrics(viewer)
    while placed_event.json()["samples"] < DURATION:
        placed_event = await next_metrics(viewer)
    now = placed_event.json()
    control_viewer = await SSEClient("/api/streams/control/metrics/sse", headers=auth).connect()
    open_clients.append(control_viewer)
    control = (await next_metrics(control_viewer)).json()
    assert ride_of(now) == ride_of(control)
    assert now["chart_reset"] is True and now["chart"] == control["chart"]  # drawn anew, hole filled
    assert not any(math.isnan(p[1] or 0) for p in now["chart"])

    await publish_all("backfilled", [{"t": str(DURATION), "power": "250", "hr": "150"}], actor)
    newer = (await next_metrics(viewer)).json()
    assert newer["chart_reset"] is False and newer["chart"] == [[DURATION, 250, 150]]  # only what is new
