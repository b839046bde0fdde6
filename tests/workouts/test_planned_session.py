"""A planned group session (issue 24's "done when"): 20 synthetic riders on one plan, some on
target, some under, some over, one dropping out. Each rider's step, state transitions and
compliance equal a hand computation; the group endpoint lists exactly the off-target riders;
the archived workouts store the same compliance; alerts fire once per crossing and clear.

The plan (FTP 250, PLAN_TOLERANCE_PCT 5): warm-up 60 s at 50-60% (125-150 W, on from 118.75
to 157.5 W), effort 60 s at 100-105% (250-262.5 W, on from 237.5 to 275.625 W), easy 60 s at
50-60%. Samples carry their ride time (``t``, 1 Hz). The 10 s power of second k of a step
after a change from a to b is (a·(9 − k) + b·(k + 1)) / 10."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from streams.access.identity import Actor
from streams.engine.context import redis_context
from streams.store import services as store
from tests.helpers import user_with_token
from tests.streams.sse_client import SSEClient
from tests.workouts.test_ride_tracking import next_metrics
from workouts.api import WorkoutOut, workout_out
from workouts.models import AthleteProfile, Workout
from workouts.plan_services import plan_create
from workouts.plans.text import steps_from_text
from workouts.rides.archive import workout_from_stream
from workouts.rides.tracking import MetricsBoard

pytestmark = pytest.mark.django_db(transaction=True)

EASY, TARGET, UNDER, OVER = 137, 256, 200, 320
# Per kind: (the power of each 60 s step, how many riders).
KINDS = {"on": ((EASY, TARGET, EASY), 10), "under": ((EASY, UNDER, EASY), 5), "over": ((EASY, OVER, EASY), 4)}

# By hand (module docstring). On-plan: the effort's first 8 s are under (134..232 W < 237.5),
# the easy step's first 8 s over (239..161 W > 157.5); a state holds after 3 s.
EXPECTED = {
    "on": {"steps": [60, 52, 52], "session": 164 / 180, "transitions": [[0, "on"], [62, "under"], [70, "on"], [122, "over"], [130, "on"]]},
    # 200 W is under all effort long; the easy step's first 6 s are over (193.7..162.2 W).
    "under": {"steps": [60, 0, 54], "session": 114 / 180, "transitions": [[0, "on"], [62, "under"], [122, "over"], [128, "on"]]},
    # 155.3..228.5 W under (5 s), 246.8 and 265.1 on (2 s), then over (53 s); easy: 8 s over.
    "over": {"steps": [60, 2, 52], "session": 114 / 180, "transitions": [[0, "on"], [62, "under"], [69, "over"], [130, "on"]]},
}


@pytest.fixture
async def coach(r):
    user, token = await user_with_token("coach")
    await sync_to_async(AthleteProfile.objects.create)(athlete=user, ftp=250, max_heart_rate=190)
    steps = steps_from_text("warm-up: 1m 50-60%\neffort: 1m 100-105%\neasy: 1m 50-60%")
    plan = await sync_to_async(plan_create)(owner=user, name="session", steps=steps)
    return user, {"Authorization": f"Bearer {token}"}, Actor(user_id=user.pk, username="coach"), plan


def riders():
    names = []
    for kind, (_, count) in KINDS.items():
        names += [(f"{kind}-{k}", kind) for k in range(count)]
    return names + [("dropout", "dropout")]


def entries(kind: str, seconds: range) -> list[dict]:
    powers = KINDS["on" if kind == "dropout" else kind][0]
    return [{"t": str(s), "power": str(powers[s // 60])} for s in seconds]


async def publish(actor, kind_of: dict, seconds_of) -> None:
    for name, kind in kind_of.items():
        await store.stream_publish(name=name, entries=entries(kind, seconds_of(kind)), actor=actor)


async def test_twenty_riders_through_one_plan(coach):
    user, auth, actor, plan = coach
    kind_of = dict(riders())
    assert len(kind_of) == 20
    for name in kind_of:
        await store.stream_settings_update(name=name, actor=actor, plan=plan.pk)
    # The first 100 s (the dropout stops at 90): the effort's 41st second.
    await publish(actor, kind_of, lambda kind: range(90 if kind == "dropout" else 100))
    client = AsyncClient()
    query = ",".join(kind_of)
    response = await client.get(f"/api/metrics?streams={query}&sort=off_target", headers=auth)
    assert response.status_code == 200, response.content
    body = response.json()
    off = {n for n, k in kind_of.items() if k in ("under", "over")}
    assert set(body["off_target"]) == off and len(body["off_target"]) == 9
    assert {r["name"] for r in body["rides"][:9]} == off  # sorted: off target first
    by_name = {r["name"]: r["plan"] for r in body["rides"]}
    for name, kind in kind_of.items():
        p = by_name[name]
        if kind == "dropout":  # its last second is 89: the effort's 30th
            assert (p["step"], p["step_name"], p["step_elapsed_s"], p["state"]) == (1, "effort", 29, "on")
            assert p["step_compliance"] == pytest.approx(22 / 30, abs=1e-3)
            assert p["session_compliance"] == pytest.approx(82 / 90, abs=1e-3)
            continue
        assert (p["step"], p["step_name"], p["step_elapsed_s"], p["step_remaining_s"]) == (1, "effort", 39, 21)
        assert p["target_w"] == [250, 262]
        assert p["state"] == {"on": "on", "under": "under", "over": "over"}[kind]
        assert p["pct_of_target"] == pytest.approx(100 * KINDS[kind][0][1] / 256.25, abs=0.05)
        effort_on = {"on": 32, "under": 0, "over": 2}[kind]  # of the effort's 40 seconds so far
        assert p["step_compliance"] == pytest.approx(effort_on / 40, abs=1e-3)
        assert p["session_compliance"] == pytest.approx((60 + effort_on) / 100, abs=1e-3)

    # The rest of the ride (not the dropout), the end, the archive.
    await publish(actor, {n: k for n, k in kind_of.items() if k != "dropout"}, lambda kind: range(100, 180))
    board = MetricsBoard.of(await redis_context())
    for name, kind in kind_of.items():
        await store.stream_end(name=name, actor=actor)
        expected = EXPECTED.get(kind)
        tracker = board.acquire(name)
        try:
            await asyncio.shield(tracker.ready)
            await _caught_up(tracker)
            live = tracker.compliance.summary()
        finally:
            board.release(tracker)
        workout = await workout_from_stream(name=name, athlete=user)
        stored_workout = await Workout.objects.select_related("athlete").aget(pk=workout.pk)
        WorkoutOut.model_validate(await sync_to_async(workout_out)(stored_workout))  # laps and compliance named
        stored = stored_workout.plan_compliance
        assert (stored["plan_id"], stored["plan"]) == (plan.pk, "session")
        assert {k: stored[k] for k in ("session", "steps", "transitions")} == live
        # The plan's steps are the workout's laps (those the rider reached), each with its power.
        laps = [(lap["label"], lap["start_s"], lap["duration_s"], lap["avg_power"]) for lap in workout.laps]
        powers = KINDS.get(kind, ((EASY, TARGET, EASY), 1))[0]
        if expected is None:
            assert laps == [("warm-up", 0, 60, pytest.approx(EASY)), ("effort", 60, 30, pytest.approx(TARGET))]
        else:
            assert laps == [(label, start, 60, pytest.approx(power))
                            for label, start, power in zip(("warm-up", "effort", "easy"), (0, 60, 120), powers)]
        if expected is None:  # the dropout: judged on the 90 s it rode
            assert [s["on_target_s"] for s in live["steps"]] == [60, 22, 0]
            assert [s["seconds"] for s in live["steps"]] == [60, 30, 0]
            continue
        assert [s["on_target_s"] for s in live["steps"]] == expected["steps"]
        assert live["session"] == pytest.approx(expected["session"], abs=1e-3)
        assert live["transitions"] == expected["transitions"]


async def _caught_up(tracker) -> None:
    async with asyncio.timeout(10):
        while tracker.end_id is None:
            await tracker.changed()


async def test_alerts_fire_once_per_crossing_and_clear_on_the_metrics_sse(coach, open_clients, settings):
    """An under rider: off target from the effort's 3rd second (plan second 62), raised after
    more than 30 s of it (at 93), cleared when the state is on again (128)."""
    _, auth, actor, plan = coach
    await store.stream_settings_update(name="solo", actor=actor, plan=plan.pk)
    client = await SSEClient("/api/streams/solo/metrics/sse", headers=auth).connect()
    open_clients.append(client)
    first = await next_metrics(client, timeout=10)
    assert first.event == "metrics" and first.json()["plan"]["phase"] == "before"
    await store.stream_publish(name="solo", entries=entries("under", range(180)), actor=actor)
    alerts = []
    async with asyncio.timeout(15):
        while len(alerts) < 2:
            event = await client.next_event(timeout=15)
            if event.event == "alert":
                alerts.append(event.json())
    assert alerts == [
        {"stream": "solo", "kind": "off_target", "state": "raised", "ride_s": 93},
        {"stream": "solo", "kind": "off_target", "state": "cleared", "ride_s": 128},
    ]


async def test_a_rider_who_stops_while_off_target_leaves_the_off_target_list(coach, open_clients, settings):
    """Off target means riding off target now: once the rider's ride is stale (a dropout), the
    group endpoint no longer lists them, whatever their last samples said."""
    settings.RIDE_STALE_AFTER_MS = 300
    _, auth, actor, plan = coach
    await store.stream_settings_update(name="quits", actor=actor, plan=plan.pk)
    client = await SSEClient("/api/streams/quits/metrics/sse", headers=auth).connect()
    open_clients.append(client)
    await store.stream_publish(name="quits", entries=entries("under", range(100)), actor=actor)
    group = AsyncClient()
    body = (await group.get("/api/metrics?streams=quits&sort=off_target", headers=auth)).json()
    assert body["off_target"] == ["quits"] and body["rides"][0]["state"] == "live"
    async with asyncio.timeout(10):  # the snapshot that says the ride went stale
        while (event := await client.next_event(timeout=10)).event != "metrics" or event.json()["state"] != "stale":
            pass
    body = (await group.get("/api/metrics?streams=quits&sort=off_target", headers=auth)).json()
    assert body["rides"][0]["plan"]["state"] == "under"  # what its last samples said
    assert (body["rides"][0]["state"], body["off_target"]) == ("stale", [])


async def test_w_prime_hr_and_stale_alerts_on_the_metrics_websocket(coach, settings):
    """A scripted ride without a plan (FTP 250, so CP 250 W and W′ 20,000 J by default; max HR
    190, so hr_high above 180.5 bpm) read off the metrics WebSocket:
    - HR 185 from second 10 to 29: hr_high raised at 10, cleared at 30;
    - a sample's power holds for the second after it, so W′bal at ride second s is after s
      seconds: 450 W (200 W over CP) from 0 to 90 takes 200 J a second, under 25% (5,000 J)
      at second 76 (4,800 J; 5,000 at 75 is not under); then 100 W: what is missing (18,000 J
      at 90) shrinks by 150/20,000 a second: still 15,025 J missing after 24 s, 14,912 J after
      25 (back over 5,000 J), at second 115;
    - no entry for RIDE_STALE_AFTER_MS: stale raised; the next entry clears it."""
    from channels.testing import WebsocketCommunicator

    from streamsite.asgi import application

    settings.RIDE_STALE_AFTER_MS = 300
    _, auth, actor, _ = coach
    token = auth["Authorization"].split()[1]
    await store.stream_settings_update(name="alerts", actor=actor, ftp=250)
    ws = WebsocketCommunicator(application, f"/ws/streams/alerts/metrics/?token={token}")
    assert (await ws.connect())[0]

    states = []  # the ride's state in each metrics frame, as it changes

    async def alerts_until(count: int) -> list[dict]:
        seen = []
        async with asyncio.timeout(15):
            while len(seen) < count:
                frame = await ws.receive_json_from(15)
                if frame.get("event") == "alert":
                    seen.append({k: frame[k] for k in ("stream", "kind", "state", "ride_s")})
                elif frame.get("event") == "metrics" and (not states or states[-1] != frame["data"]["state"]):
                    states.append(frame["data"]["state"])
        return seen

    try:
        first = await ws.receive_json_from(10)  # before any entry: the ride is waiting
        assert (first["event"], first["data"]["state"]) == ("metrics", "waiting")
        states.append("waiting")
        ride = [{"t": str(s), "power": "450" if s < 90 else "100", "heart_rate": "185" if 10 <= s < 30 else "150"}
                for s in range(140)]
        await store.stream_publish(name="alerts", entries=ride, actor=actor)
        expected = [("hr_high", "raised", 10), ("hr_high", "cleared", 30), ("w_prime_low", "raised", 76),
                    ("w_prime_low", "cleared", 115), ("stale", "raised", None)]
        seen = await alerts_until(len(expected))
        assert [(a["kind"], a["state"]) for a in seen] == [(k, s) for k, s, _ in expected]
        assert [a["ride_s"] for a in seen[:4]] == [s for _, _, s in expected[:4]]
        assert all(a["stream"] == "alerts" for a in seen) and seen[4]["ride_s"] >= 139

        await store.stream_publish(name="alerts", entries=[{"t": "141", "power": "100"}], actor=actor)
        assert await alerts_until(1) == [{"stream": "alerts", "kind": "stale", "state": "cleared", "ride_s": 141}]
        assert states == ["waiting", "live", "stale"]  # each metrics frame's "state", as it changed
        async with asyncio.timeout(15):  # the snapshot of the entry that cleared it
            while (frame := await ws.receive_json_from(15)).get("event") != "metrics":
                pass
        assert frame["data"]["state"] == "live"
    finally:
        await ws.disconnect()
