import json

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print the effective Redis configuration (password redacted)."

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(settings.REDIS.summary(), indent=2))
