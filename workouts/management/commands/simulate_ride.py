import asyncio

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from streams.access.identity import SYSTEM, Actor
from streams.core.errors import InvalidInput
from streams.engine.context import close_redis_context, redis_errors_as_command_errors
from streams.store import services as store
from streams.store.names import validate_stream_name
from workouts.rides.riders import SimulatedRider, eta_text, ride_end, rider_publish, stream_prepare
from workouts.rides.simulate import simulate_ride

SHAPE_FTP = 250  # the ride's shape without --ftp (the stream's FTP is then left as it is)


class Command(BaseCommand):
    help = "Publish a realistic ride into a stream, live (the demo source for /live/ and benchmarks)."

    def add_arguments(self, parser):
        parser.add_argument("stream")
        parser.add_argument("--duration", type=int, default=3600, help="ride seconds")
        parser.add_argument("--hz", type=float, default=1.0)
        parser.add_argument("--speedup", type=float, default=1.0, help="2 = twice real time; 0 = as fast as possible")
        parser.add_argument("--ftp", type=int, default=None,
                            help="the rider's FTP: shapes the ride and is set as the stream's FTP (IF, TSS, zones)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--owner", default=None,
                            help="publish as this user (the stream's owner); default: as the system, no owner")
        parser.add_argument("--no-end", action="store_true", help="leave the ride open at the end (no end marker)")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="for the page URL printed")

    def handle(self, *args, stream, duration, hz, speedup, ftp, seed, owner, no_end, base_url, **options):
        try:
            validate_stream_name(stream)
        except InvalidInput as exc:
            raise CommandError(str(exc)) from None
        if duration < 1 or not 0 < hz <= 10 or speedup < 0 or not (ftp is None or 50 <= ftp <= 600):
            raise CommandError("need --duration >= 1, 0 < --hz <= 10, --speedup >= 0, 50 <= --ftp <= 600")
        rider = SimulatedRider(
            stream=stream, actor=self._actor(owner), speedup=speedup,
            ride=simulate_ride(duration=duration, hz=hz, ftp=ftp or SHAPE_FTP, seed=seed),
        )
        self.stdout.write(
            f"Riding {stream}: {duration // 60} min {duration % 60} s of ride at {speedup:g}x, "
            f"{eta_text(duration, speedup)}; FTP {ftp if ftp else 'unchanged (give --ftp for IF, TSS, zones)'}.\n"
            f"  Watch it: {base_url.rstrip('/')}/live/{stream}"
        )
        with redis_errors_as_command_errors():
            ended = asyncio.run(self._ride(rider, ftp, end=not no_end))
        self.stdout.write(f"Published {rider.published} samples to {stream}; {self._ending(ended)}")

    def _actor(self, owner: str | None) -> Actor:
        if owner is None:
            return SYSTEM
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"no user named {owner!r}")
        return Actor(user_id=user.pk, username=user.get_username())

    async def _ride(self, rider: SimulatedRider, ftp: int | None, *, end: bool) -> bool:
        try:
            await stream_prepare(rider=rider, ftp=ftp)
            with tqdm(total=rider.total, unit="sample", disable=None, file=self.stderr) as bar:
                await rider_publish(rider, lambda _rider, n: bar.update(n))
            if end:
                await ride_end(name=rider.stream, actor=rider.actor)
            return end
        except store.WriteRefused:
            raise CommandError(f"stream {rider.stream!r} belongs to someone else (or its ride has ended)") from None
        except store.PublishNotReplicated as exc:
            raise CommandError(exc.detail) from None
        finally:
            await close_redis_context()

    @staticmethod
    def _ending(ended: bool) -> str:
        if ended:
            return "the ride has ended (a server archives it as a workout)."
        return "the ride stays open (--no-end): a server ends it after RIDE_IDLE_END without a sample."
