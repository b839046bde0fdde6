"""The group ride demo (``manage.py demo_ride``, ``./dev.sh demo``): simulated athletes, each a
user with an athlete profile owning a public stream, ride together in one event loop; at the
end each ride ends (docs/rides.md) and becomes a workout — by the server's ride janitor, or
here when there is no janitor to do it (``RIDE_AUTO_ARCHIVE`` off, or no explicit end)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model

from streams.access.identity import Actor
from streams.core.aio import cancel_and_wait
from workouts.models import AthleteProfile, Workout, WorkoutPlan
from workouts.plan_services import plan_create, plan_update
from workouts.plans.steps import steps_from_json
from workouts.rides.archive import archive_stream
from workouts.rides.riders import SimulatedRider, ride_end, rider_publish, stream_prepare
from workouts.rides.simulate import simulate_ride


@dataclass(frozen=True)
class DemoAthlete:
    username: str
    first_name: str
    ftp: int
    weight_kg: float
    max_heart_rate: int
    seed: int


DEMO_ATHLETES = (
    DemoAthlete("demo-anna", "Anna", 220, 58.0, 188, 1),
    DemoAthlete("demo-ben", "Ben", 300, 78.0, 182, 2),
    DemoAthlete("demo-carla", "Carla", 260, 64.0, 192, 3),
    DemoAthlete("demo-dev", "Dev", 190, 85.0, 176, 4),
    DemoAthlete("demo-eva", "Eva", 240, 61.0, 186, 5),
    DemoAthlete("demo-femi", "Femi", 280, 72.0, 190, 6),
)


@dataclass
class DemoRider:
    athlete: DemoAthlete
    user: object
    rider: SimulatedRider
    workout: Workout | None = None


def demo_athletes_ensure(count: int) -> list[tuple[DemoAthlete, object]]:
    """The first ``count`` demo athletes as users (no usable password) with their profiles."""
    out = []
    for athlete in DEMO_ATHLETES[:count]:
        user, created = get_user_model().objects.get_or_create(
            username=athlete.username, defaults={"first_name": athlete.first_name}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        AthleteProfile.objects.update_or_create(athlete=user, defaults={
            "ftp": athlete.ftp, "weight_kg": athlete.weight_kg, "max_heart_rate": athlete.max_heart_rate,
        })
        out.append((athlete, user))
    return out


def demo_plan_steps(duration: int) -> list[dict]:
    """The plan the simulated riders ride (``simulate_ride``'s shape over ``duration``): a
    warm-up ramp, endurance, 4 min on at 105% / 4 min off at 50% from 30% to 70% of the ride,
    endurance, a cool-down."""
    def step(name: str, start: float, end: float, lo: int, hi: int) -> dict:
        return {"name": name, "duration_s": round(end) - round(start), "target": {"pct_ftp": [lo, hi]}}

    d = duration
    steps = [step("warm-up", 0, 0.15 * d, 55, 75), step("endurance", 0.15 * d, 0.3 * d, 70, 80)]
    start, k = 0.3 * d, 0
    while round(start) < round(0.7 * d):
        end = min(start + 240, 0.7 * d)
        k += 1
        steps.append(step(f"on {(k + 1) // 2}" if k % 2 else f"off {k // 2}", start, end, *((100, 110) if k % 2 else (45, 55))))
        start = end
    steps += [step("endurance", 0.7 * d, 0.9 * d, 70, 80), step("cool-down", 0.9 * d, d, 45, 55)]
    return [s for s in steps if s["duration_s"] > 0]


def demo_plan_ensure(owner, duration: int) -> WorkoutPlan:
    """The group's plan for a ride of ``duration`` (public: every demo athlete may put it on
    their stream); a re-run of the same length reuses it."""
    length = f"{duration // 60} min" if duration >= 60 else f"{duration} s"
    name = f"Demo group ride: 4 min on / 4 min off ({length})"
    steps = steps_from_json(demo_plan_steps(duration))
    plan = WorkoutPlan.objects.filter(owner=owner, name=name).order_by("pk").first()
    if plan is None:
        return plan_create(owner=owner, name=name, steps=steps, public=True)
    return plan_update(plan=plan, steps=steps, public=True)


def demo_riders(athletes, *, duration: int, speedup: float, stamp: str | None = None) -> list[DemoRider]:
    """One rider per athlete on a fresh stream (``<name>-<mmdd-hhmmss>``): a re-run never meets
    the ended rides of an earlier one."""
    stamp = stamp or time.strftime("%m%d-%H%M%S")
    riders = []
    for athlete, user in athletes:
        actor = Actor(user_id=user.pk, username=user.get_username())
        ride = simulate_ride(duration=duration, ftp=athlete.ftp, seed=athlete.seed)
        name = f"{athlete.first_name.lower()}-{stamp}"
        riders.append(DemoRider(athlete, user, SimulatedRider(stream=name, actor=actor, ride=ride, speedup=speedup)))
    return riders


async def group_ride_start(riders: list[DemoRider], *, plan: int | None = None) -> None:
    """Each stream created public and owned by its athlete, with the athlete's FTP and the
    group's plan (a planned session: docs/rides.md)."""
    for demo in riders:
        await stream_prepare(rider=demo.rider, ftp=demo.athlete.ftp, visibility="public", plan=plan)


async def group_ride_publish(riders: list[DemoRider], *, report: Callable[[], None], every: float) -> None:
    """All riders at once in this event loop; ``report()`` every ``every`` seconds meanwhile."""
    reporter = asyncio.create_task(_report_every(report, every))
    try:
        async with asyncio.TaskGroup() as group:  # one rider failing cancels (and awaits) the others
            for demo in riders:
                group.create_task(rider_publish(demo.rider))
    finally:
        await cancel_and_wait(reporter)


async def _report_every(report: Callable[[], None], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        report()


def janitor_archives() -> bool:
    """Whether a server's ride janitor archives ended rides (docs/rides.md)."""
    return settings.RIDE_AUTO_ARCHIVE


async def group_ride_finish(riders: list[DemoRider]) -> None:
    """End every ride; archive here what no janitor will."""
    for demo in riders:
        await ride_end(name=demo.rider.stream, actor=demo.rider.actor)
        if not janitor_archives():
            archived = await archive_stream(
                name=demo.rider.stream, athlete=demo.user, ftp=demo.athlete.ftp,
                title=f"Group ride: {demo.athlete.first_name}", actor=demo.rider.actor,
            )
            demo.workout = archived.workout

