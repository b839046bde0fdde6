import asyncio

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from streams.core.errors import InvalidInput
from streams.engine.context import close_redis_context, redis_errors_as_command_errors
from streams.store import services as store
from streams.store.names import validate_stream_name
from workouts.errors import WorkoutInputError
from workouts.rides.archive import RideNotEnded, workout_from_stream
from workouts.services import athlete_by_username


class Command(BaseCommand):
    help = "Turn an ended ride's stream into a workout (read in chunks; --force: one that has not ended), optionally deleting the stream."

    def add_arguments(self, parser):
        parser.add_argument("stream")
        parser.add_argument("--athlete", required=True, help="username")
        parser.add_argument("--title", default=None)
        parser.add_argument("--ftp", type=int, default=None)
        parser.add_argument("--delete", action="store_true", help="delete the stream afterwards")
        parser.add_argument("--force", action="store_true", help="archive a ride that has not ended")

    def handle(self, *args, stream, athlete, title, ftp, delete, force, **options):
        try:
            validate_stream_name(stream)
            who = athlete_by_username(athlete)
        except InvalidInput as exc:  # a bad name, or a WorkoutInputError
            raise CommandError(str(exc)) from None

        async def run():
            try:
                info = (await store.stream_info_batch(names=[stream]))[stream]
                total = info.length if info else None
                with tqdm(total=total, unit="entry", disable=None, file=self.stderr) as bar:
                    return await workout_from_stream(
                        name=stream, athlete=who, title=title, ftp=ftp, delete_stream=delete, progress=bar.update,
                        force=force,
                    )
            finally:
                await close_redis_context()

        try:
            with redis_errors_as_command_errors():
                workout = asyncio.run(run())
        except (LookupError, WorkoutInputError, RideNotEnded) as exc:
            raise CommandError(str(exc)) from None
        np_text = "—" if workout.normalized_power is None else f"{workout.normalized_power:.0f} W"
        self.stdout.write(f"workout {workout.pk}: {workout.sample_count} samples, NP {np_text}")
