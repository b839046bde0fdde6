import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from streams.models import ApiToken


class Command(BaseCommand):
    help = "Quick start: create (or reset) a demo admin user and print its credentials and a new API token."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args, username, base_url, **options):
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=username)
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
        _, token = ApiToken.issue(user=user, name="demo")
        self.stdout.write(
            f"Demo admin: {base_url}/admin/  user {username}  password {password}\n"
            f"API token:  {token}\n"
            f"  curl -H 'Authorization: Bearer {token}' -d '{{\"power\": 250}}' "
            f"{base_url}/api/streams/demo/events"
        )
