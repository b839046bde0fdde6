from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workouts.errors import WorkoutInputError
from workouts.services import athlete_by_username, workout_from_fit


class Command(BaseCommand):
    help = "Import FIT activity files as workouts (each file all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+")
        parser.add_argument("--athlete", required=True, help="username")
        parser.add_argument("--ftp", type=int, default=None, help="watts; default: the file's threshold power")

    def handle(self, *args, files, athlete, ftp, **options):
        try:
            who = athlete_by_username(athlete)
        except WorkoutInputError as exc:
            raise CommandError(str(exc)) from None
        if ftp is not None and not 1 <= ftp <= 2000:
            raise CommandError("--ftp must be between 1 and 2000 watts")
        failed = 0
        for name in files:
            path = Path(name)
            try:
                workout = workout_from_fit(path.read_bytes(), athlete=who, title=path.stem, ftp=ftp)
            except (OSError, WorkoutInputError) as exc:
                failed += 1
                self.stderr.write(f"{name}: {exc}")
                continue
            np_text = "—" if workout.normalized_power is None else f"{workout.normalized_power:.0f} W"
            self.stdout.write(f"{name}: workout {workout.pk}, {workout.moving_time_s} s moving, NP {np_text}")
        if failed:
            raise CommandError(f"{failed} of {len(files)} files could not be imported")
