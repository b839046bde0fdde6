"""REST endpoints for workouts (thin: parse, call a service, shape)."""

from __future__ import annotations

import datetime as dt

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from ninja import File, Form, Query, Router, Schema
from ninja.errors import HttpError
from ninja.files import UploadedFile
from pydantic import Field

from streams.access import identity, rules
from streams.access.identity import Identity
from streams.api import MANAGE, MAX_OFFSET, PUBLISH, READ_AS_USER, StreamName, fast_json
from streams.core import offload
from streams.core.errors import InvalidInput
from streams.store import services as store
from streams.store.names import validate_stream_name
from workouts import fit_export, services, tcx_export
from workouts.errors import WorkoutInputError
from workouts.models import DERIVED_FIELDS, Workout
from workouts.prepare import ftp_field, prepare_fit, prepare_json, text_field
from workouts.rides import archive

router = Router(tags=["workouts"])


FORBID_EXTRA = {"extra": "forbid"}  # the schema tests fail on a field a schema does not name


class LapOut(Schema):
    model_config = FORBID_EXTRA

    start_s: float = Field(description="seconds from the first sample")
    end_s: float
    duration_s: float
    moving_s: int = Field(description="seconds of power data in the lap (one-second resampling)")
    avg_power: float | None
    np: float | None = Field(description="Normalized Power of the lap")
    avg_hr: float | None
    label: str | None = Field(description="the marker's label or the plan step's name; null for the first lap")


class StepComplianceOut(Schema):
    model_config = FORBID_EXTRA

    step: int
    name: str
    seconds: int = Field(description="seconds of the ride in this step")
    on_target_s: int
    compliance: float | None = Field(description="share of the step's seconds on target, 0..1")


class PlanComplianceOut(Schema):
    model_config = FORBID_EXTRA

    plan_id: int
    plan: str = Field(description="the plan's name at the archive")
    session: float | None = Field(description="share of the planned seconds on target, 0..1")
    transitions: list[list] = Field(description="[[ride_s, step, state], …]: each change of the plan state")
    steps: list[StepComplianceOut]


class WorkoutOut(Schema):
    """A workout as every workout endpoint answers it (``samples`` only with ``samples=true``)."""

    model_config = FORBID_EXTRA

    id: int
    title: str
    athlete: str = Field(description="the athlete's username")
    started_at: dt.datetime
    sport: str
    ftp: int | None = Field(description="watts: the stream's, the request's or the profile's at creation")
    critical_power: int | None = Field(description="watts (CP), else FTP is used for W′ balance")
    w_prime: int | None = Field(description="joules (W′), else 20,000")
    max_heart_rate: int | None = Field(description="bpm: the heart-rate zones' base")
    source: str = Field(description="admin, api, fit or stream")
    stream: str = Field(description="the stream it was archived from, or empty")
    notes: str
    pauses: list[list[float]] = Field(description="[[start_s, end_s], …] of timer pauses")
    markers: list[list] = Field(description="[[ride_s, label], …]: lap starts")
    laps: list[LapOut]
    plan_compliance: PlanComplianceOut | None = Field(description="an archived planned ride's compliance, else null")
    created_at: dt.datetime
    updated_at: dt.datetime
    duration_s: float | None
    moving_time_s: int
    sample_count: int
    avg_power: float | None
    max_power: float | None
    normalized_power: float | None
    np_low_confidence: bool = Field(description="NP from under 10 minutes of power")
    intensity_factor: float | None
    tss: float | None
    variability_index: float | None
    work_kj: float | None
    avg_hr: float | None
    max_hr: float | None
    avg_cadence: float | None = Field(description="zeros excluded")
    peak_5s: float | None
    peak_1min: float | None
    peak_5min: float | None
    peak_20min: float | None
    peak_60min: float | None
    min_w_prime_balance: float | None = Field(description="joules; null without CP (or FTP) and power")
    w_prime_below_25_s: int | None = Field(description="seconds below 25% of W′")
    time_in_power_zones: list[float] | None = Field(description="seconds in Coggan's zones 1-7; null without FTP")
    time_in_hr_zones: list[float] | None = Field(description="seconds in heart-rate zones 1-5; null without max HR")
    metrics_version: int
    samples: dict[str, list[float | None]] | None = Field(
        None, description="with samples=true: columnar arrays (t seconds from the start, power, heart_rate, …)")


class ArchivedOut(WorkoutOut):
    stream_deleted: bool | None = Field(None, description="with delete_stream: whether the stream is gone")


class WorkoutListOut(Schema):
    count: int
    workouts: list[WorkoutOut]


def workout_out(w: Workout, *, samples: bool = False) -> dict:
    out = {
        "id": w.pk, "title": w.title, "athlete": w.athlete.get_username(), "started_at": w.started_at.isoformat(),
        "sport": w.sport, "ftp": w.ftp, **w.physiology(), "source": w.source, "stream": w.stream, "notes": w.notes, "pauses": w.pauses,
        "markers": w.markers, "laps": w.laps, "plan_compliance": w.plan_compliance,
        "created_at": w.created_at.isoformat(), "updated_at": w.updated_at.isoformat(),
        **{field: getattr(w, field) for field in DERIVED_FIELDS},
    }
    if samples:
        out["samples"] = w.samples.to_lists() if w.samples is not None else None
    return out


async def _athlete(ident: Identity, username: str | None, *, default_id: int | None = None, archive: bool = False):
    """The named athlete, else ``default_id``'s user, else the caller. Naming another athlete
    needs the workouts.add_workout permission (or, for an archive, managing every stream)."""
    username = text_field(username, field="athlete", max_length=150)
    default_name = None
    if default_id is not None and default_id != ident.user_id:
        default_name = (await get_user_model().objects.filter(pk=default_id).values_list("username", flat=True).afirst())
    if username and username not in (ident.username, default_name):
        if not (ident.has_perm(identity.ADD_ANY_WORKOUT) or (archive and rules.manages_all_streams(ident))):
            raise HttpError(403, "creating a workout for another athlete needs the workouts.add_workout permission")
        return await sync_to_async(services.athlete_by_username)(username)  # WorkoutInputError: 400
    user_id = default_id or ident.user_id
    user = await get_user_model().objects.filter(pk=user_id).afirst()
    if user is None:
        raise InvalidInput(f"athlete #{user_id} no longer exists")
    return user


def _visible(qs, ident: Identity):
    """Workouts the caller may read (the one rule: ``services.workouts_readable``)."""
    return services.workouts_readable(qs, ident)


WORKOUT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["title", "started_at", "samples"],
            "properties": {
                "title": {"type": "string"}, "athlete": {"type": "string"},
                "started_at": {"type": "string", "format": "date-time"}, "ftp": {"type": "integer"},
                "notes": {"type": "string"},
                "markers": {"type": "array", "description": "[[ride_s, label], …]: lap starts in seconds from the first sample",
                            "maxItems": 500, "items": {"type": "array", "minItems": 2, "maxItems": 2}},
                "samples": {"type": "object", "description": "columnar arrays of equal length; only t is required; null = missing",
                            "properties": {c: {"type": "array", "items": {"type": ["number", "null"]}}
                                           for c in ("t", "power", "heart_rate", "cadence", "speed", "distance", "altitude")}},
            },
        }}},
    }
}


@router.post("/workouts", response={201: WorkoutOut}, auth=PUBLISH, summary="Create a workout", openapi_extra=WORKOUT_BODY)
async def create_workout(request):
    # Up to 32 MiB of JSON: parsed, validated, measured and encoded in a worker process, not on
    # the event loop every live listener shares (and not in a thread: json.loads holds the GIL).
    raw = await sync_to_async(_body, thread_sensitive=False)(request)
    with offload.user_job(request.auth.user_id):  # one user's uploads take at most their share of workers
        prepared = await offload.run(prepare_json, raw)
    athlete = await _athlete(request.auth, prepared.athlete)
    workout = await sync_to_async(services.workout_create_prepared)(
        athlete=athlete, prepared=prepared, source=Workout.Source.API
    )
    return fast_json(workout_out(workout), status=201)


def _body(request) -> bytes:
    return request.body  # read from the spooled upload file: a thread, not the event loop


class WorkoutQuery(Schema):
    athlete: str | None = None
    stream: str | None = Field(None, max_length=128, description="only the workouts archived from this stream")
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


@router.get("/workouts", response=WorkoutListOut, auth=READ_AS_USER, summary="List workouts (own, shared with me, or all with workouts.view_workout)")
async def list_workouts(request, q: Query[WorkoutQuery]):
    athlete = text_field(q.athlete, field="athlete", max_length=150)

    @sync_to_async
    def fetch():
        qs = _visible(Workout.objects.select_related("athlete").defer("samples_blob"), request.auth)
        if athlete:
            qs = qs.filter(athlete__username=athlete)
        if q.stream:
            qs = qs.filter(stream=q.stream)
        if q.since:
            qs = qs.filter(started_at__gte=q.since)
        if q.until:
            qs = qs.filter(started_at__lt=q.until)
        return qs.count(), [workout_out(w) for w in qs[q.offset : q.offset + q.limit]]

    count, items = await fetch()
    return fast_json({"count": count, "workouts": items})


@router.post("/workouts/import", response={201: WorkoutOut}, auth=PUBLISH, summary="Import a FIT file")
async def import_fit(request, file: File[UploadedFile], title: Form[str] = "", ftp: Form[int | None] = None,
                     athlete: Form[str] = ""):
    who = await _athlete(request.auth, athlete or None)
    if file.size is not None and file.size > settings.WORKOUTS_MAX_UPLOAD:
        raise HttpError(413, f"FIT file is larger than WORKOUTS_MAX_UPLOAD ({settings.WORKOUTS_MAX_UPLOAD} bytes)")
    title = text_field(title, field="title", max_length=200) or text_field(
        (file.name or "")[:200].replace("\x00", ""), field="file name", max_length=200
    )
    data = await sync_to_async(file.read, thread_sensitive=False)()
    physiology = await sync_to_async(services.profile_physiology)(who)
    try:
        with offload.user_job(request.auth.user_id):
            prepared = await offload.run(prepare_fit, data, ftp=ftp_field(ftp), physiology=physiology)
    except WorkoutInputError as exc:
        raise WorkoutInputError(f"{file.name}: {exc}") from None
    workout = await sync_to_async(services.workout_create_prepared)(
        athlete=who, prepared=prepared, source=Workout.Source.FIT, title=title or "FIT import"
    )
    return fast_json(workout_out(workout), status=201)


@router.get("/workouts/{workout_id}", response=WorkoutOut, auth=READ_AS_USER, summary="One workout (samples=true adds the arrays)")
async def get_workout(request, workout_id: int, samples: bool = False):
    workout = await _readable_workout(request.auth, workout_id)
    return fast_json(await sync_to_async(workout_out)(workout, samples=samples))


async def _readable_workout(ident: Identity, workout_id: int) -> Workout:
    """The workout, if the caller may read it (the one rule); else 404, as if it did not exist."""
    workout = None
    if 1 <= workout_id < 2**63:
        qs = _visible(Workout.objects.select_related("athlete"), ident)
        workout = await qs.filter(pk=workout_id).afirst()
    if workout is None:
        raise HttpError(404, f"workout {workout_id} not found")
    return workout


FIT_FILE = {
    "responses": {
        200: {"description": "a FIT activity file (Content-Disposition: attachment)",
              "content": {fit_export.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
        409: {"description": "the workout has no samples to export",
              "content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}},
    },
}


@router.get("/workouts/{workout_id}/fit", auth=READ_AS_USER, summary="One workout as a FIT activity file",
            openapi_extra=FIT_FILE)
async def get_workout_fit(request, workout_id: int):
    workout = await _readable_workout(request.auth, workout_id)
    with offload.user_job(request.auth.user_id):  # encoded in a worker process, like an import
        data = await services.workout_fit(workout)
    response = HttpResponse(data, content_type=fit_export.MEDIA_TYPE)
    response["Content-Disposition"] = fit_export.attachment(workout.pk)
    return response


TCX_FILE = {
    "responses": {
        200: {"description": "a TCX (Training Center XML v2) activity (Content-Disposition: attachment)",
              "content": {tcx_export.MEDIA_TYPE: {"schema": {"type": "string"}}}},
        409: FIT_FILE["responses"][409],
    },
}


@router.get("/workouts/{workout_id}/tcx", auth=READ_AS_USER, summary="One workout as a TCX file",
            openapi_extra=TCX_FILE)
async def get_workout_tcx(request, workout_id: int):
    workout = await _readable_workout(request.auth, workout_id)
    with offload.user_job(request.auth.user_id):  # written in a worker process, like the FIT file
        data = await services.workout_tcx(workout)
    response = HttpResponse(data, content_type=tcx_export.MEDIA_TYPE)
    response["Content-Disposition"] = tcx_export.attachment(workout.pk)
    return response


class ArchiveIn(Schema):
    title: str | None = Field(None, max_length=200)
    athlete: str | None = None
    ftp: int | None = Field(None, ge=1, le=2000)
    delete_stream: bool = False
    force: bool = Field(False, description="archive a ride that has not ended (docs/rides.md)")


@router.post("/streams/{name}/archive", response={201: ArchivedOut}, auth=MANAGE, summary="Turn a stream into a workout (owner or manager)")
async def archive_stream(request, name: StreamName, body: ArchiveIn):
    validate_stream_name(name)
    info = (await store.stream_info_batch(names=[name]))[name]
    if info is None:
        raise HttpError(404, f"stream {name!r} not found")
    meta = info.meta
    rules.check_manage(request.auth, name, owner_id=meta.owner_id, visibility=meta.visibility)
    # The workout goes to the stream's owner unless a manager names another athlete.
    who = await _athlete(request.auth, body.athlete, default_id=meta.owner_id, archive=True)
    title = text_field(body.title, field="title", max_length=200)
    try:
        # The delete (delete_stream) removes only the entries archived, and only while the
        # caller may still write the stream and its owner is the one checked here.
        with offload.user_job(request.auth.user_id):
            archived = await archive.archive_stream(
                name=name, athlete=who, title=title, ftp=body.ftp, delete_stream=body.delete_stream,
                actor=rules.actor_of(request.auth), owner_id=meta.owner_id, force=body.force,
            )
    except LookupError as exc:
        raise HttpError(404, str(exc)) from None
    except archive.RideNotEnded as exc:
        raise HttpError(409, exc.detail) from None

    @sync_to_async
    def shape():
        return workout_out(Workout.objects.select_related("athlete").get(pk=archived.workout.pk))

    out = await shape()
    if body.delete_stream:
        out["stream_deleted"] = archived.stream_deleted
    return fast_json(out, status=201)
