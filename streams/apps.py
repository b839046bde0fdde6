from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "streams"
    verbose_name = "Streams"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from streams.identity import forget_identities
        from streams.models import ApiToken, Share

        # Changes made in this process take effect here at once; other processes see them
        # when their cached identities expire (AUTH_CACHE_TTL).
        for model in (ApiToken, Share, get_user_model()):
            post_save.connect(forget_identities, sender=model, dispatch_uid=f"identity-{model.__name__}-save")
            post_delete.connect(forget_identities, sender=model, dispatch_uid=f"identity-{model.__name__}-delete")
