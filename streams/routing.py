from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import re_path

from streams.consumers import StreamConsumer

websocket_urlpatterns = [
    re_path(r"^ws/streams/(?P<name>[^/]+)/$", StreamConsumer.as_asgi()),
]


class BrowserOriginValidator(OriginValidator):
    """A browser always sends Origin with a WebSocket handshake, and then it must be one of
    ALLOWED_HOSTS (so a session cookie cannot be used by another site's page). Devices and
    apps usually send none, and authenticate with a token instead: they pass."""

    def valid_origin(self, parsed_origin):
        return parsed_origin is None or self.validate_origin(parsed_origin)


def websocket_application():
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), allowed)
