"""Workout plans without Django: the steps' schema, the typed and ZWO forms, and the steps
resolved to watts (what the live compliance builds on)."""

from workouts.plans.steps import (
    PlanError,
    ResolvedStep,
    Step,
    StepPosition,
    plan_duration_s,
    resolved_steps,
    step_at,
    steps_from_json,
    stored_steps,
)
from workouts.plans.text import steps_from_text
from workouts.plans.zwo import plan_from_zwo

__all__ = [
    "PlanError", "ResolvedStep", "Step", "StepPosition", "plan_duration_s", "plan_from_zwo", "resolved_steps",
    "step_at", "steps_from_json", "steps_from_text", "stored_steps",
]
