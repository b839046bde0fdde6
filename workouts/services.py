"""Workout services: every entry point (admin, API, commands) creates and saves workouts here,
and the metrics are computed here (``workout_save``): the model only stores them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.contrib.auth import get_user_model

from workouts.errors import WorkoutInputError
from workouts.metrics import with_ftp
from workouts.models import DERIVED_FIELDS, AthleteProfile, Workout
from workouts.prepare import Prepared, metrics_of, prepare_fit
from workouts.samples import Samples


def athlete_by_username(username: str):
    User = get_user_model()
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
        raise WorkoutInputError(f"no athlete named {username!r}") from None


def profile_ftp(athlete) -> int | None:
    return AthleteProfile.objects.filter(athlete=athlete).values_list("ftp", flat=True).first()


def workout_create(
    *,
    athlete,
    title: str,
    started_at: dt.datetime,
    samples: Samples,
    ftp: int | None = None,
    source: str = Workout.Source.API,
    sport: str = Workout.Sport.CYCLING,
    notes: str = "",
    pauses: list[tuple[float, float]] | None = None,
) -> Workout:
    """Create a workout; its metrics are computed as it is saved. Without ``ftp``, the
    athlete's profile FTP (if any) is the workout's."""
    if ftp is None:
        ftp = profile_ftp(athlete)
    workout = Workout(
        athlete=athlete, title=title, started_at=started_at, ftp=ftp, source=source, sport=sport,
        notes=notes, pauses=[list(p) for p in pauses or ()],
    )
    workout.samples = samples
    return workout_save(workout)


def workout_create_prepared(*, athlete, prepared: Prepared, source: str, title: str | None = None) -> Workout:
    """Create a workout from a Prepared one (samples encoded and metrics computed off the
    event loop, in a worker process): saving does not compute them again. Without an FTP,
    the athlete's profile FTP (if any) is the workout's: only IF and TSS change."""
    if prepared.ftp is None and (ftp := profile_ftp(athlete)) is not None:
        prepared.ftp, prepared.metrics = ftp, with_ftp(prepared.metrics, ftp)
    workout = Workout(
        athlete=athlete, title=title or prepared.title or "", notes=prepared.notes, source=source,
    )
    workout.apply_prepared(prepared)
    return workout_save(workout)


def workout_from_fit(data: bytes, *, athlete, title: str, ftp: int | None = None) -> Workout:
    """Create a workout from a FIT file in this process (management commands); raises FitError."""
    return workout_create_prepared(
        athlete=athlete, prepared=prepare_fit(data, ftp=ftp), source=Workout.Source.FIT, title=title
    )


def workout_save(workout: Workout, *, update_fields=None, recompute: bool = False) -> Workout:
    """Save a workout with metrics that match its samples, pauses and FTP: computed here
    unless they were just computed for exactly these inputs (a Prepared workout)."""
    if recompute or not workout.metrics_current():
        workout.set_metrics(metrics_of(workout.samples, ftp=workout.ftp, pauses=workout.pauses))
    if update_fields is not None:
        update_fields = set(update_fields) | set(DERIVED_FIELDS)
    workout.save(update_fields=update_fields)
    return workout


def workouts_recompute(workouts: Iterable[Workout]) -> int:
    """Refresh derived fields (e.g. after a formula change). Returns how many were saved."""
    count = 0
    for workout in workouts:
        workout_save(workout, update_fields=["updated_at"], recompute=True)
        count += 1
    return count
