from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from streams.keys import stream_key
from streams.names import InvalidInput, validate_stream_name
from streams.topology import check_at_start_up


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
            check_at_start_up(settings.REDIS)  # the key below is only right for a Redis we serve
        except (InvalidInput, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(stream_key(settings.REDIS.stream_key_prefix, name))
