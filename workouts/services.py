"""Workout services: every entry point (admin, API, commands) creates and saves workouts here,
and the metrics are computed here (``workout_save``): the model only stores them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.contrib.auth import get_user_model

from streams.access.identity import VIEW_ALL_WORKOUTS, Identity
from streams.core import offload
from workouts import fit_export, tcx_export
from workouts.errors import WorkoutInputError
from workouts.models import DERIVED_FIELDS, PHYSIOLOGY_FIELDS, AthleteProfile, Workout
from workouts.prepare import Prepared, laps_of, metrics_of, prepare_fit
from workouts.samples import Samples


def athlete_by_username(username: str):
    User = get_user_model()
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
        raise WorkoutInputError(f"no athlete named {username!r}") from None


def profile_ftp(athlete) -> int | None:
    return AthleteProfile.objects.filter(athlete=athlete).values_list("ftp", flat=True).first()


def profile_physiology(athlete) -> dict:
    """The profile's CP, W′ and max heart rate (None for each without a profile)."""
    row = AthleteProfile.objects.filter(athlete=athlete).values(*PHYSIOLOGY_FIELDS).first()
    return row or dict.fromkeys(PHYSIOLOGY_FIELDS)


def _fill_from_profile(workout: Workout) -> None:
    """FTP, CP, W′ and max heart rate the workout was not given: the athlete's profile's."""
    row = AthleteProfile.objects.filter(athlete=workout.athlete).values("ftp", *PHYSIOLOGY_FIELDS).first() or {}
    for field, value in row.items():
        if getattr(workout, field) is None and value is not None:
            setattr(workout, field, value)


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
    """Create a workout; its metrics are computed as it is saved. Without ``ftp`` (or CP, W′,
    max heart rate), the athlete's profile's (if any) is the workout's."""
    workout = Workout(
        athlete=athlete, title=title, started_at=started_at, ftp=ftp, source=source, sport=sport,
        notes=notes, pauses=[list(p) for p in pauses or ()],
    )
    _fill_from_profile(workout)
    workout.samples = samples
    return workout_save(workout)


def workout_create_prepared(
    *, athlete, prepared: Prepared, source: str, title: str | None = None, stream: str = "",
    plan_compliance: dict | None = None,
) -> Workout:
    """Create a workout from a Prepared one (samples encoded and metrics computed off the
    event loop, in a worker process): saving does not compute them again, unless the
    athlete's profile gives what the Prepared one lacked (FTP, CP, W′, max heart rate: the
    profile's are the workout's), which changes IF, TSS, the zones and the W′ balance. Callers
    that know the athlete before preparing pass the profile's values to it
    (``profile_physiology``), so this happens only to a JSON body naming its athlete."""
    workout = Workout(
        athlete=athlete, title=title or prepared.title or "", notes=prepared.notes, source=source, stream=stream,
        plan_compliance=plan_compliance,
    )
    workout.apply_prepared(prepared)
    _fill_from_profile(workout)
    return workout_save(workout)


def workout_from_fit(data: bytes, *, athlete, title: str, ftp: int | None = None) -> Workout:
    """Create a workout from a FIT file in this process (management commands); raises FitError."""
    return workout_create_prepared(
        athlete=athlete, prepared=prepare_fit(data, ftp=ftp), source=Workout.Source.FIT, title=title
    )


def workout_save(workout: Workout, *, update_fields=None, recompute: bool = False) -> Workout:
    """Save a workout with metrics and laps that match its samples, pauses, FTP and markers:
    computed here unless they were just computed for exactly these inputs (a Prepared workout)."""
    if recompute or not workout.metrics_current():
        workout.set_metrics(metrics_of(workout.samples, ftp=workout.ftp, pauses=workout.pauses, **workout.physiology()))
    if recompute or not workout.laps_current():
        workout.set_laps(laps_of(workout.samples, markers=workout.markers, pauses=workout.pauses))
    if update_fields is not None:
        update_fields = set(update_fields) | set(DERIVED_FIELDS) | {"laps"}
    workout.save(update_fields=update_fields)
    return workout


def workouts_recompute(workouts: Iterable[Workout]) -> int:
    """Refresh derived fields (e.g. after a formula change). Returns how many were saved."""
    count = 0
    for workout in workouts:
        workout_save(workout, update_fields=["updated_at"], recompute=True)
        count += 1
    return count


def workouts_readable(qs, ident: Identity):
    """The one read rule of workouts (the API and the workout page): the caller's own, those
    shared with them, or all with ``workouts.view_workout``."""
    if ident.has_perm(VIEW_ALL_WORKOUTS):
        return qs
    return qs.filter(athlete_id__in=ident.readable_owners())


def workout_fit_job(workout: Workout) -> dict:
    """The arguments of ``fit_export.workout_fit_from_blob`` for a workout: its stored samples,
    laps, pauses and totals. Raises NoSamplesToExport (409) for a workout without samples."""
    if not workout.samples_blob:
        raise fit_export.NoSamplesToExport(f"workout {workout.pk} has no samples: there is nothing to export as FIT")
    summary = fit_export.FitSummary(
        started_at=workout.started_at, sport=workout.sport, ftp=workout.ftp, avg_power=workout.avg_power,
        max_power=workout.max_power, normalized_power=workout.normalized_power,
        intensity_factor=workout.intensity_factor, tss=workout.tss, avg_hr=workout.avg_hr, max_hr=workout.max_hr,
        avg_cadence=workout.avg_cadence, work_kj=workout.work_kj,
    )
    return {"blob": bytes(workout.samples_blob), "summary": summary, "laps": list(workout.laps or ()),
            "pauses": [tuple(p) for p in workout.pauses or ()]}


async def workout_fit(workout: Workout) -> bytes:
    """The workout as a FIT activity file, encoded in a worker process (a 200,000-sample ride
    takes ~1 s of CPU: off the event loop every live listener shares)."""
    return await offload.run(fit_export.workout_fit_from_blob, **workout_fit_job(workout))


async def workout_tcx(workout: Workout) -> bytes:
    """The workout as a TCX file (``workouts/tcx_export.py``), written in a worker process like
    its FIT file; a workout without samples raises NoSamplesToExport (409)."""
    if not workout.samples_blob:
        raise fit_export.NoSamplesToExport(f"workout {workout.pk} has no samples: there is nothing to export as TCX")
    return await offload.run(tcx_export.workout_tcx_from_blob, **workout_fit_job(workout), title=workout.title)
