from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from workouts.metrics import METRICS_VERSION
from workouts.models import Workout
from workouts.services import workouts_recompute


class Command(BaseCommand):
    help = "Recompute derived metrics, in chunks (bounded memory)."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--all", action="store_true")
        group.add_argument("--outdated", action="store_true", help=f"metrics_version < {METRICS_VERSION}")
        parser.add_argument("--chunk", type=int, default=200)

    def handle(self, *args, all, outdated, chunk, **options):
        if chunk < 1:
            raise CommandError("--chunk must be at least 1")
        qs = Workout.objects.order_by("pk")
        if outdated:
            qs = qs.filter(metrics_version__lt=METRICS_VERSION)
        total = qs.count()
        done = last_pk = 0
        with tqdm(total=total, unit="workout", disable=None, file=self.stderr) as bar:
            while batch := list(qs.filter(pk__gt=last_pk)[:chunk]):  # keyset pages: bounded memory
                done += workouts_recompute(batch)
                last_pk = batch[-1].pk
                bar.update(len(batch))
        self.stdout.write(f"recomputed {done} workouts")
