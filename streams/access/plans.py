"""Who may put a workout plan on a stream (``PUT /api/streams/{name}`` ``{"plan": id}``).

The streams app stores only the plan's id in the stream's metadata; the plans themselves live
in the workouts app, a floor above, which this floor never imports. So the rule is registered
here at start-up by the app that keeps plans (``WorkoutsConfig.ready``) and asked by the
streams API before it writes the setting. Without a registered rule no plan can be set.

A plan the caller may not read (or that does not exist: the same answer, so ids do not leak)
is a 400 naming the plan.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from streams.access.identity import AccessError, Identity

PlanReadable = Callable[[Identity, int], Awaitable[bool]]

_rule: list[PlanReadable] = []


def register_plan_rule(rule: PlanReadable) -> None:
    """Set the rule (the latest registration wins: one keeper)."""
    _rule[:] = [rule]


async def check_plan_readable(ident: Identity, plan_id: int) -> None:
    """AccessError (400) unless the caller may read plan ``plan_id``."""
    if not _rule:
        raise AccessError(400, "plan: workout plans are not available on this server")
    if not await _rule[0](ident, plan_id):
        raise AccessError(400, f"plan: no plan {plan_id} that you may read")
