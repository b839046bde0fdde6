from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self):
        # Imported here, not at the top: the collectors read models, which load after the app
        # registry (Django's rule).
        from monitoring.prometheus import MULTIPROCESS
        from streams.engine.context import on_context_start

        if MULTIPROCESS:  # each process writes its live readings for /metrics to sum
            on_context_start(start_sampler)


def start_sampler(ctx) -> None:
    from monitoring.prometheus import ProcessStateSampler

    ProcessStateSampler.of(ctx).start()
