"""The workout page (``/workouts/{id}``): a finished ride for people — its summary, peak powers
and chart. The link target of an ended ride. Its readers are the API's
(``services.workouts_readable``): the athlete, their shared viewers, ``workouts.view_workout``;
anyone else gets a 404, and an anonymous visitor the login page (which then comes back here)."""

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse

from streams.access import identity
from streams.access.identity import AccessError
from workouts import display
from workouts.charts import power_hr_svg
from workouts.models import Workout
from workouts.rides.views import error_page
from workouts.services import workouts_readable


def _readable_workout(ident, workout_id: int):
    return workouts_readable(Workout.objects.select_related("athlete"), ident).filter(pk=workout_id).first()


def _page_context(workout: Workout) -> dict:
    athlete = workout.athlete
    return {
        "workout": workout,
        "athlete": athlete.get_full_name() or athlete.get_username(),
        "summary": display.workout_summary(workout),
        "peaks": display.workout_peaks(workout),
        "zones": display.workout_zones(workout),
        "chart": power_hr_svg(workout.samples),
    }


async def workout_page(request, workout_id: int):
    try:
        ident = await identity.identify_request(request)
    except AccessError as exc:
        return error_page(request, exc.status, exc.detail)
    if ident.user_id is None:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not 1 <= workout_id < 2**63:
        raise Http404("no such workout")
    workout = await sync_to_async(_readable_workout)(ident, workout_id)
    if workout is None:
        raise Http404("no such workout")
    context = await sync_to_async(_page_context)(workout)  # decodes the samples
    return render(request, "workouts/workout.html", context)
