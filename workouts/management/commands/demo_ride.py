import asyncio

from django.core.management.base import BaseCommand, CommandError

from streams.engine.context import close_redis_context, redis_errors_as_command_errors
from streams.store import services as store
from workouts.rides.demo import (
    DEMO_ATHLETES, DemoRider, demo_athletes_ensure, demo_plan_ensure, demo_riders, group_ride_finish, group_ride_publish,
    group_ride_start, janitor_archives,
)
from workouts.rides.riders import clock, eta_text


class Command(BaseCommand):
    help = ("A group ride to watch: simulated athletes (users with profiles) ride live on public streams "
            "in one process, then their rides end and become workouts.")

    def add_arguments(self, parser):
        parser.add_argument("--riders", type=int, default=4, help=f"1 to {len(DEMO_ATHLETES)}")
        parser.add_argument("--duration", type=int, default=3600, help="ride seconds (10 to 86400)")
        parser.add_argument("--speedup", type=float, default=10.0, help="10 = ten times real time; 0 = as fast as possible")
        parser.add_argument("--every", type=float, default=10.0, help="seconds between progress lines")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="for the URLs printed")

    def handle(self, *args, riders, duration, speedup, every, base_url, **options):
        if not 1 <= riders <= len(DEMO_ATHLETES) or not 10 <= duration <= 86400 or speedup < 0 or every <= 0:
            raise CommandError(f"need 1 <= --riders <= {len(DEMO_ATHLETES)}, 10 <= --duration <= 86400 (a day: "
                               "the longest workout plan), --speedup >= 0, --every > 0")
        self.base = base_url.rstrip("/")
        athletes = demo_athletes_ensure(riders)
        group = demo_riders(athletes, duration=duration, speedup=speedup)
        self.plan = demo_plan_ensure(athletes[0][1], duration)
        with redis_errors_as_command_errors():
            asyncio.run(self._ride(group, duration, speedup, every))
        self._report_end(group)

    async def _ride(self, group: list[DemoRider], duration: int, speedup: float, every: float) -> None:
        try:
            await group_ride_start(group, plan=self.plan.pk)
            self._report_start(group, duration, speedup)
            await group_ride_publish(group, report=lambda: self._report_progress(group), every=every)
            self._report_progress(group)
            await group_ride_finish(group)
        except store.WriteRefused as exc:
            raise CommandError(f"stream {exc.name!r} belongs to someone else") from None
        finally:
            await close_redis_context()

    def _report_start(self, group: list[DemoRider], duration: int, speedup: float) -> None:
        names = ",".join(d.rider.stream for d in group)
        self.stdout.write(
            f"{len(group)} riders, {clock(duration)} of ride at {speedup:g}x: {eta_text(duration, speedup)}.\n"
            f"  Front page: {self.base}/\n"
            f"  Group ride: {self.base}/live/?streams={names}\n"
            f"  Plan: {self.plan.name}, {len(self.plan.steps)} steps ({self.base}/api/plans/{self.plan.pk})"
        )
        for d in group:
            self.stdout.write(f"  {d.athlete.first_name:<6} FTP {d.athlete.ftp} W  {self.base}/live/{d.rider.stream}")

    def _report_progress(self, group: list[DemoRider]) -> None:
        for d in group:
            r = d.rider
            self.stdout.write(f"  {d.athlete.first_name:<6} {clock(r.ride_time):>7} of {clock(r.ride['t'][-1] + 1)}"
                              f"  {_whole(r.last.get('power')):>4} W  {_whole(r.last.get('heart_rate')):>3} bpm")

    def _report_end(self, group: list[DemoRider]) -> None:
        for d in group:
            if d.workout is not None:
                self.stdout.write(f"  {d.athlete.first_name:<6} workout: {self.base}/workouts/{d.workout.pk}")
            else:
                self.stdout.write(f"  {d.athlete.first_name:<6} ended; the server archives it as a workout")
        if janitor_archives():
            self.stdout.write(f"  Ended rides link to their workouts on {self.base}/")


def _whole(value: str | None) -> str:
    return "–" if value is None else f"{float(value):.0f}"
