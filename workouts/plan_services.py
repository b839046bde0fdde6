"""Workout plan services: every entry point (API, admin, the streams' plan setting) reads and
writes plans here, and the one read rule of plans is here (``plans_readable``).

Who may do what (docs/security.md):
- read: the owner; users it is shared with (``shared_with``); users the owner shares all their
  data with (a ``Share``, as for streams and workouts); every signed-in user when ``public``;
  users with ``workouts.view_workoutplan`` or ``streams.manage_all_streams`` (a stream manager
  runs group sessions: may put any plan on any stream).
- change: the owner, or ``workouts.change_workoutplan``; delete: the owner, or
  ``workouts.delete_workoutplan``. A reader who may not write gets 403, anyone else 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from streams.access.identity import (
    CHANGE_ANY_PLAN,
    DELETE_ANY_PLAN,
    MANAGE_ALL_STREAMS,
    VIEW_ALL_PLANS,
    AccessError,
    Identity,
)
from workouts.models import AthleteProfile, WorkoutPlan
from workouts.plans.steps import PlanError, ResolvedStep, Step, check_plan, resolved_steps, stored_steps

MAX_SHARED_WITH = 1000


def plans_readable(qs, ident: Identity):
    """The one read rule of plans (the API, the streams' plan setting)."""
    if ident.has_perm(VIEW_ALL_PLANS) or ident.has_perm(MANAGE_ALL_STREAMS):
        return qs
    if not ident.authenticated:
        return qs.none()
    readable = Q(owner_id__in=ident.readable_owners()) | Q(public=True)
    shared = qs.filter(shared_with__id=ident.user_id).values("pk")
    return qs.filter(readable | Q(pk__in=shared))


def plan_readable_by(ident: Identity, plan_id: int) -> bool:
    return plans_readable(WorkoutPlan.objects.filter(pk=plan_id), ident).exists()


def may_change(ident: Identity, plan: WorkoutPlan) -> bool:
    return plan.owner_id == ident.user_id or ident.has_perm(CHANGE_ANY_PLAN)


def may_delete(ident: Identity, plan: WorkoutPlan) -> bool:
    return plan.owner_id == ident.user_id or ident.has_perm(DELETE_ANY_PLAN)


def plan_for(ident: Identity, plan_id: int, *, write: str | None = None) -> WorkoutPlan:
    """The plan, read for the caller: AccessError 404 when they may not read it (or it does not
    exist), 403 when ``write`` ("change" or "delete") is asked and they may not."""
    plan = plans_readable(WorkoutPlan.objects.select_related("owner"), ident).filter(pk=plan_id).first()
    if plan is None:
        raise AccessError(404, f"plan {plan_id} not found")
    allowed = {"change": may_change, "delete": may_delete, None: lambda *_: True}[write]
    if not allowed(ident, plan):
        raise AccessError(403, f"only the owner of plan {plan_id} (or workouts.{write}_workoutplan) may {write} it")
    return plan


def users_named(names: Sequence[str]) -> list:
    """The active users of these names; PlanError naming any unknown one."""
    names = list(dict.fromkeys(names))
    if len(names) > MAX_SHARED_WITH:
        raise PlanError(f"shared_with: at most {MAX_SHARED_WITH} users")
    users = list(get_user_model().objects.filter(username__in=names, is_active=True))
    unknown = sorted(set(names) - {u.get_username() for u in users})
    if unknown:
        raise PlanError(f"shared_with: no user named {', '.join(map(repr, unknown[:5]))}")
    return users


def plan_create(*, owner, name: str, steps: Sequence[Step], public: bool = False,
                shared_with: Sequence[str] = ()) -> WorkoutPlan:
    """A new plan of ``owner``'s; PlanError for bad steps or unknown users."""
    users = users_named(shared_with)
    with transaction.atomic():
        plan = WorkoutPlan.objects.create(owner=owner, name=name, steps=stored_steps(check_plan(steps)), public=public)
        plan.shared_with.set(users)
    return plan


def plan_update(*, plan: WorkoutPlan, name: str | None = None, steps: Sequence[Step] | None = None,
                public: bool | None = None, shared_with: Sequence[str] | None = None) -> WorkoutPlan:
    """Change what is given (None keeps it); ``shared_with`` replaces the list."""
    users = None if shared_with is None else users_named(shared_with)
    if name is not None:
        plan.name = name
    if steps is not None:
        plan.steps = stored_steps(check_plan(steps))
    if public is not None:
        plan.public = public
    with transaction.atomic():
        plan.save()
        if users is not None:
            plan.shared_with.set(users)
    return plan


def plan_delete(*, plan: WorkoutPlan) -> None:
    """Delete a plan. Streams that carry its id keep it: they have no plan from then on."""
    plan.delete()


def plan_out(plan: WorkoutPlan, ident: Identity) -> dict:
    """The API's form (docs/api.md); ``shared_with`` only to whoever may change the plan."""
    out = {
        "id": plan.pk, "name": plan.name, "owner": plan.owner.get_username(), "public": plan.public,
        "duration_s": plan.duration_s, "steps": plan.steps, "may_change": may_change(ident, plan),
        "created_at": plan.created_at.isoformat(), "updated_at": plan.updated_at.isoformat(),
    }
    if out["may_change"]:
        out["shared_with"] = sorted(u.get_username() for u in plan.shared_with.all())
    return out


# --- a plan on a ride -------------------------------------------------------------------------
@dataclass(frozen=True)
class RidePlan:
    """The plan a stream carries, resolved to watts: what the live compliance follows.
    ``start_s`` is the ride second (after the stream's first entry) its first step begins;
    ``ftp`` None leaves % of FTP targets without watts (``target_w`` None)."""

    plan_id: int
    name: str
    start_s: int
    ftp: int | None
    steps: tuple[ResolvedStep, ...]


def ride_plan(meta, *, ftp: int | None = None) -> RidePlan | None:
    """The plan of a stream's metadata (``StreamMeta``: ``plan``, ``plan_start``, ``ftp``,
    ``owner_id``) resolved for its FTP: ``ftp`` when given, else the stream's, else the owner's
    profile's. None without a plan, or when the plan was deleted."""
    if meta.plan is None:
        return None
    row = WorkoutPlan.objects.filter(pk=meta.plan).values_list("name", "steps").first()
    if row is None:
        return None
    ftp = ftp or meta.ftp or _profile_ftp(meta.owner_id)
    name, steps = row
    return RidePlan(plan_id=meta.plan, name=name, start_s=meta.plan_start or 0, ftp=ftp,
                    steps=tuple(resolved_steps(steps, ftp)))


def _profile_ftp(owner_id: int | None) -> int | None:
    if owner_id is None:
        return None
    return AthleteProfile.objects.filter(athlete_id=owner_id).values_list("ftp", flat=True).first()
