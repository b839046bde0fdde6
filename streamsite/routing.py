from importlib import import_module

from channels.routing import URLRouter
from django.conf import settings
from django.http.cookie import parse_cookie
from django.urls import re_path

from streams.core.compat import origin_validator, session_user
from streams.live.consumers import StreamConsumer
from workouts.rides.consumers import MetricsConsumer

websocket_urlpatterns = [
    re_path(r"^ws/streams/(?P<name>[^/]+)/$", StreamConsumer.as_asgi()),
    re_path(r"^ws/streams/(?P<name>[^/]+)/metrics/$", MetricsConsumer.as_asgi()),
]


class SessionUser:
    """``scope["user"]`` from the session cookie, read once at the handshake.

    Channels' ``AuthMiddlewareStack`` does the same but also wraps every ``send`` to save the
    session when it changes — ~17% of a WebSocket delivery's cost (py-spy, docs/benchmarks.md
    (j)) for a consumer that never touches the session. Sockets without a session cookie cost
    no database query; with one, Channels' ``get_user`` checks it (and its auth hash:
    ``compat.session_user``)."""

    def __init__(self, app) -> None:
        from django.contrib.auth.models import AnonymousUser

        self.app = app
        self.store = import_module(settings.SESSION_ENGINE).SessionStore
        self.anonymous = AnonymousUser

    async def __call__(self, scope, receive, send):
        session_key = _cookie(scope, settings.SESSION_COOKIE_NAME)
        user = await session_user(self.store(session_key)) if session_key else self.anonymous()
        return await self.app({**scope, "user": user}, receive, send)


def _cookie(scope, name: str) -> str | None:
    for header, value in scope.get("headers") or ():
        if header == b"cookie":
            return parse_cookie(value.decode("latin-1")).get(name) or None
    return None


def websocket_application():
    """The WebSocket routes behind an Origin check. A browser always sends Origin with a
    WebSocket handshake, and then it must be one of ALLOWED_HOSTS (so a session cookie cannot
    be used by another site's page). Devices and apps usually send none, and authenticate with
    a token instead: they pass."""
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return origin_validator(SessionUser(URLRouter(websocket_urlpatterns)), allowed)
