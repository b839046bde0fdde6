from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from streams.core.errors import InvalidInput
from streams.engine.topology import check_at_start_up
from streams.store.keys import key_layout
from streams.store.names import validate_stream_name


class Command(BaseCommand):
    help = (
        "Print the Redis key a device XADDs to for a stream (the service finds streams added "
        "this way: they are listed, followed and can be claimed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the stream")

    def handle(self, *args, name, **options):
        try:
            validate_stream_name(name)
            check_at_start_up(settings.REDIS)  # REDIS_CLUSTER must agree with the Redis it names
        except (InvalidInput, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(key_layout(settings.REDIS).stream(name))
