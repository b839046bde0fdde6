from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from streams.core.errors import InvalidInput
from streams.engine.context import close_redis_context, redis_errors_as_command_errors
from streams.store import services as store
from streams.store.names import validate_stream_name


class Command(BaseCommand):
    help = "Make a user the owner of an existing stream (for streams made before ownership or by a device's own XADD)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the stream")
        parser.add_argument("username", help="its new owner")

    def handle(self, *args, name, username, **options):
        try:
            validate_stream_name(name)
        except InvalidInput as exc:
            raise CommandError(str(exc)) from None
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")

        async def claim():
            try:
                return await store.stream_claim(name=name, user_id=user.pk, username=user.get_username())
            finally:
                await close_redis_context()

        with redis_errors_as_command_errors():
            claimed = async_to_sync(claim)()
        if not claimed:
            raise CommandError(f"no stream named {name!r}")
        self.stdout.write(f"{name} now belongs to {username}")
