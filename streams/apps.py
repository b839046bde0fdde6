from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "streams"
    verbose_name = "Streams"

    def ready(self):
        # Imported here, not at the top: the models load after the app registry (Django's rule).
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from streams.access.identity import forget_identities
        from streams.engine.context import on_context_start
        from streams.models import ApiToken, Share

        # Changes made in this process take effect here at once; other processes see them
        # when their cached identities expire (AUTH_CACHE_TTL).
        for model in (ApiToken, Share, get_user_model()):
            post_save.connect(forget_identities, sender=model, dispatch_uid=f"identity-{model.__name__}-save")
            post_delete.connect(forget_identities, sender=model, dispatch_uid=f"identity-{model.__name__}-delete")
        # Every new Redis context keeps its registry fresh (a reconcile SCAN now and then).
        on_context_start(start_registry)


def start_registry(ctx) -> None:
    from streams.store.registry import StreamRegistry

    StreamRegistry.of(ctx).start()
