import asyncio
import math
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from streams.access.identity import SYSTEM, Actor
from streams.core.errors import InvalidInput
from streams.engine.context import close_redis_context, redis_errors_as_command_errors
from streams.store import services as store
from streams.store.names import validate_stream_name
from workouts.rides.simulate import simulate_ride


class Command(BaseCommand):
    help = "Publish a realistic ride into a stream, live (the demo source for /live/ and benchmarks)."

    def add_arguments(self, parser):
        parser.add_argument("stream")
        parser.add_argument("--duration", type=int, default=3600, help="ride seconds")
        parser.add_argument("--hz", type=float, default=1.0)
        parser.add_argument("--speedup", type=float, default=1.0, help="2 = twice real time; 0 = as fast as possible")
        parser.add_argument("--ftp", type=int, default=250)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--owner", default=None,
                            help="publish as this user (the stream's owner); default: as the system, no owner")

    def handle(self, *args, stream, duration, hz, speedup, ftp, seed, owner, **options):
        try:
            validate_stream_name(stream)
        except InvalidInput as exc:
            raise CommandError(str(exc)) from None
        if duration < 1 or not 0 < hz <= 10 or speedup < 0 or not 50 <= ftp <= 600:
            raise CommandError("need --duration >= 1, 0 < --hz <= 10, --speedup >= 0, 50 <= --ftp <= 600")
        actor = SYSTEM
        if owner is not None:
            user = get_user_model().objects.filter(username=owner).first()
            if user is None:
                raise CommandError(f"no user named {owner!r}")
            actor = Actor(user_id=user.pk, username=user.get_username())
        ride = simulate_ride(duration=duration, hz=hz, ftp=ftp, seed=seed)
        with redis_errors_as_command_errors():
            asyncio.run(self._publish(stream, ride, speedup, actor))

    async def _publish(self, stream, ride, speedup, actor):
        names = [k for k in ride if k != "t"]
        n = ride["t"].size
        batch = 100 if speedup == 0 else 1
        start = time.monotonic()
        try:
            with tqdm(total=n, unit="sample", disable=None, file=self.stderr) as bar:
                for i in range(0, n, batch):
                    if speedup:
                        due = start + ride["t"][i] / speedup
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                    entries = []
                    for j in range(i, min(i + batch, n)):
                        fields = {"t": f"{ride['t'][j]:.3f}"}
                        for name in names:
                            value = ride[name][j]
                            if not math.isnan(value):
                                fields[name] = f"{value:g}"
                        entries.append(fields)
                    await store.stream_publish(name=stream, entries=entries, actor=actor)
                    bar.update(len(entries))
        except store.WriteRefused:
            raise CommandError(f"stream {stream!r} belongs to someone else") from None
        except store.PublishNotReplicated as exc:
            raise CommandError(exc.detail) from None
        finally:
            await close_redis_context()
        self.stdout.write(f"published {n} samples to {stream}")
