"""REST endpoints for workout plans (thin: parse, call workouts/plan_services.py, shape).
A plan the caller may not read is 404, one they may read but not change 403 (the AccessError
of ``plan_services.plan_for``, answered by streamsite/api.py).

Scopes: reading needs ``read``, creating, changing and deleting need ``manage`` (a plan is
configuration, as shares and stream settings are); every route needs a signed-in user.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from ninja import Query, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status
from pydantic import Field

from streams.access.identity import Identity
from streams.api import MANAGE, MAX_OFFSET, READ_AS_USER, fast_json
from workouts import plan_services as services
from workouts.models import WorkoutPlan
from workouts.plans.steps import MAX_STEPS, PLAN_NAME_MAX, PlanError, Step
from workouts.plans.text import MAX_TEXT, steps_from_text
from workouts.plans.zwo import MAX_ZWO, plan_from_zwo
from workouts.prepare import text_field

router = Router(tags=["plans"])


class PlanIn(Schema):
    """A plan's steps come in one of three forms: ``steps`` (JSON), ``text`` (the typed form,
    docs/api.md) or ``zwo`` (a Zwift workout file's XML)."""

    name: str | None = Field(None, max_length=PLAN_NAME_MAX, description="required unless the ZWO file names it")
    steps: list[Step] | None = Field(None, max_length=MAX_STEPS)
    text: str | None = Field(None, max_length=MAX_TEXT, description='e.g. "10m 55%\\n4x(8m 105%, 4m 55%)\\n10m 50%"')
    zwo: str | None = Field(None, max_length=MAX_ZWO, description="a .zwo file's XML")
    public: bool | None = Field(None, description="every signed-in user may read it (default false)")
    shared_with: list[str] | None = Field(None, max_length=services.MAX_SHARED_WITH, description="usernames who may read it")


class PlanOut(Schema):
    id: int
    name: str
    owner: str
    public: bool
    duration_s: int
    steps: list[Step]
    may_change: bool
    shared_with: list[str] | None = Field(None, description="only to whoever may change the plan")
    created_at: str
    updated_at: str


class PlanListOut(Schema):
    count: int
    plans: list[PlanOut]


class PlanQuery(Schema):
    owner: str | None = Field(None, max_length=150, description="only this user's plans")
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


def _steps_and_name(body: PlanIn, *, required: bool) -> tuple[list[Step] | None, str | None]:
    """The steps of whichever form the body has (exactly one on create, at most one on change)
    and the plan's name (the body's, else the ZWO file's)."""
    forms = [form for form in ("steps", "text", "zwo") if getattr(body, form) is not None]
    if len(forms) > 1:
        raise PlanError(f"give the steps in one form: steps, text or zwo (got {', '.join(forms)})")
    if not forms:
        if required:
            raise PlanError('a plan needs its steps: "steps" (JSON), "text" or "zwo"')
        return None, None
    name = None
    if forms[0] == "steps":
        steps = body.steps
    elif forms[0] == "text":
        steps = steps_from_text(body.text)
    else:
        name, steps = plan_from_zwo(body.zwo)
    return steps, name


def _plan_id(plan_id: int) -> int:
    if not 1 <= plan_id < 2**63:
        raise HttpError(404, f"plan {plan_id} not found")
    return plan_id


def _owner(ident: Identity):
    user = get_user_model().objects.filter(pk=ident.user_id).first()
    if user is None:  # deleted since its identity was cached
        raise PlanError(f"user #{ident.user_id} no longer exists")
    return user


@router.post("/plans", response={201: PlanOut}, auth=MANAGE, summary="Create a workout plan (steps, text or zwo)")
async def create_plan(request, body: PlanIn):
    ident = request.auth

    @sync_to_async
    def create():
        steps, zwo_name = _steps_and_name(body, required=True)
        name = text_field(body.name, field="name", max_length=PLAN_NAME_MAX) or zwo_name
        if not name:
            raise PlanError(f"name is required (1-{PLAN_NAME_MAX} characters)")
        plan = services.plan_create(owner=_owner(ident), name=name[:PLAN_NAME_MAX], steps=steps,
                                    public=bool(body.public), shared_with=body.shared_with or ())
        return services.plan_out(plan, ident)

    return fast_json(await create(), status=201)


@router.get("/plans", response=PlanListOut, auth=READ_AS_USER, summary="The workout plans I may read")
async def list_plans(request, q: Query[PlanQuery]):
    owner = text_field(q.owner, field="owner", max_length=150)

    @sync_to_async
    def fetch():
        qs = services.plans_readable(WorkoutPlan.objects.select_related("owner"), request.auth)
        if owner:
            qs = qs.filter(owner__username=owner)
        page = qs.prefetch_related("shared_with")[q.offset : q.offset + q.limit]
        return qs.count(), [services.plan_out(p, request.auth) for p in page]

    count, plans = await fetch()
    return fast_json({"count": count, "plans": plans})


@router.get("/plans/{plan_id}", response=PlanOut, auth=READ_AS_USER, summary="One workout plan")
async def get_plan(request, plan_id: int):
    _plan_id(plan_id)

    @sync_to_async
    def fetch():
        return services.plan_out(services.plan_for(request.auth, plan_id), request.auth)

    return fast_json(await fetch())


@router.put("/plans/{plan_id}", response=PlanOut, auth=MANAGE,
            summary="Change a workout plan: what the body gives (owner, or workouts.change_workoutplan)")
async def put_plan(request, plan_id: int, body: PlanIn):
    _plan_id(plan_id)
    ident = request.auth

    @sync_to_async
    def change():
        plan = services.plan_for(ident, plan_id, write="change")
        steps, _ = _steps_and_name(body, required=False)
        name = text_field(body.name, field="name", max_length=PLAN_NAME_MAX)
        plan = services.plan_update(plan=plan, name=name, steps=steps, public=body.public, shared_with=body.shared_with)
        return services.plan_out(plan, ident)

    return fast_json(await change())


@router.delete("/plans/{plan_id}", response={204: None}, auth=MANAGE,
               summary="Delete a workout plan (owner, or workouts.delete_workoutplan)")
async def delete_plan(request, plan_id: int):
    _plan_id(plan_id)

    @sync_to_async
    def delete():
        services.plan_delete(plan=services.plan_for(request.auth, plan_id, write="delete"))

    await delete()
    return Status(204, None)
