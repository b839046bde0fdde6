import datetime as dt

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from streams.models import ALL_SCOPES, ApiToken, parse_scopes


class Command(BaseCommand):
    help = "Create an API token for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label for the token")
        parser.add_argument("--scopes", default=ALL_SCOPES, help=f"comma-separated subset of {ALL_SCOPES} (default: all)")
        parser.add_argument("--expires-in-days", type=int, default=None, help="expire after N days (default: never)")

    def handle(self, *args, username, name, scopes, expires_in_days, **options):
        try:
            chosen = parse_scopes(scopes)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
            raise CommandError("--expires-in-days must be between 1 and 3650")
        User = get_user_model()
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive")
        expires_at = timezone.now() + dt.timedelta(days=expires_in_days) if expires_in_days else None
        _, raw = ApiToken.issue(user=user, name=name, scopes=chosen, expires_at=expires_at)
        self.stdout.write(raw)
