from asgiref.sync import sync_to_async
from django.apps import AppConfig


class WorkoutsConfig(AppConfig):
    name = "workouts"

    def ready(self) -> None:
        # Imported here, not at the top: the models load after the app registry (Django's rule).
        from streams.access.plans import register_plan_rule
        from workouts.plan_services import plan_readable_by

        # The streams app (a floor below) asks this rule before it puts a plan on a stream.
        register_plan_rule(sync_to_async(plan_readable_by))
