from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self):
        from monitoring.prometheus import MULTIPROCESS
        from streams.engine.context import on_context_start

        if MULTIPROCESS:  # each process writes its live readings for /metrics to sum
            on_context_start(start_sampler)


def start_sampler(ctx) -> None:
    from monitoring.prometheus import ProcessStateSampler

    ProcessStateSampler.of(ctx).start()
