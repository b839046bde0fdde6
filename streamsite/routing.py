import functools
import json
from importlib import import_module
from urllib.parse import urlsplit

from channels.routing import URLRouter
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http.cookie import parse_cookie
from django.urls import re_path
from django.utils.http import is_same_domain

from streams.access.identity import SESSION_UNCONFIRMED
from streams.core.compat import session_user
from streams.core.database import DatabaseDown, database_outage
from streams.live.consumers import StreamConsumer
from workouts.rides.consumers import MetricsConsumer


async def deny(scope, receive, send, status: int, detail: str) -> None:
    """Refuse a WebSocket handshake: an HTTP ``status`` with a JSON ``{"detail": ...}`` body
    where the server offers the ASGI "WebSocket Denial Response" extension (uvicorn), else a
    close before accepting (daphne answers 403). Never an exception: no 500, no traceback."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left before the handshake
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = json.dumps({"detail": detail}).encode()
        await send({
            "type": "websocket.http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def no_route(scope, receive, send) -> None:
    """Any other WebSocket path: refused with 404 (Channels' router would raise: a 500)."""
    await deny(scope, receive, send, 404, f"no WebSocket endpoint at {scope.get('path', '')!r}")


websocket_urlpatterns = [
    re_path(r"^ws/streams/(?P<name>[^/]+)/$", StreamConsumer.as_asgi()),
    re_path(r"^ws/streams/(?P<name>[^/]+)/metrics/$", MetricsConsumer.as_asgi()),
    re_path(r"", no_route),  # last: everything else
]


class SessionUser:
    """``scope["user"]`` (and ``scope["session"]``) from the session cookie, read once at the
    handshake.

    Channels' ``AuthMiddlewareStack`` does the same but also wraps every ``send`` to save the
    session when it changes — ~17% of a WebSocket delivery's cost (py-spy, docs/benchmarks.md
    (j)) for a consumer that never touches the session. Sockets without a session cookie cost
    no database query; with one, Channels' ``get_user`` checks it (and its auth hash:
    ``compat.session_user``). A long-lived socket re-checks its session later
    (``streams.access.identity.still_valid``): logout, a password change or expiry end it.
    While the database is down the user is not read: ``SESSION_UNCONFIRMED`` carries the
    session key, and the identity cache answers for it (within AUTH_OUTAGE_GRACE)."""

    def __init__(self, app) -> None:
        from django.contrib.auth.models import AnonymousUser

        self.app = app
        self.store = import_module(settings.SESSION_ENGINE).SessionStore
        self.anonymous = AnonymousUser

    async def __call__(self, scope, receive, send):
        session_key = _cookie(scope, settings.SESSION_COOKIE_NAME)
        if not session_key:
            return await self.app({**scope, "user": self.anonymous()}, receive, send)
        session = self.store(session_key)
        try:
            user = await database_outage.through(lambda: session_user(session))
        except DatabaseDown:
            scope = {**scope, SESSION_UNCONFIRMED: session_key}
            user = self.anonymous()
        return await self.app({**scope, "user": user, "session": session}, receive, send)


def _cookie(scope, name: str) -> str | None:
    for header, value in scope.get("headers") or ():
        if header == b"cookie":
            return parse_cookie(value.decode("latin-1")).get(name) or None
    return None


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host}" + ("" if port in (None, DEFAULT_PORTS.get(scheme)) else f":{port}")


def parse_origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an ``http(s)://host[:port]`` origin, else None."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _own_origin(scope) -> tuple[str, str, int] | None:
    """The origin this handshake was addressed to: its Host header, and the scheme the
    connection came in on (``wss`` is https; behind a TLS proxy, TRUSTED_PROXIES gives it)."""
    host = next((v for k, v in scope.get("headers") or () if k == b"host"), None)
    if host is None:
        return None
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return parse_origin(f"{scheme}://{host.decode('latin-1')}")


@functools.cache
def _compiled(allowed: tuple[str, ...]) -> tuple[tuple[str, str, int, bool], ...]:
    compiled = []
    for pattern in allowed:
        subdomains = "://*." in pattern
        parsed = parse_origin(pattern.replace("://*.", "://", 1))
        if parsed is None and pattern != "*":
            raise ImproperlyConfigured(
                f"WEBSOCKET_ALLOWED_ORIGINS: {pattern!r} is not an origin (https://host[:port], https://*.domain or *)"
            )
        if parsed is not None:
            compiled.append((*parsed, subdomains))
    return tuple(compiled)


def allowed_origins(allowed) -> tuple[tuple[str, str, int, bool], ...]:
    """WEBSOCKET_ALLOWED_ORIGINS as (scheme, host, port, subdomains too) tuples."""
    return _compiled(tuple(allowed))


def origin_refusal(scope, allowed: list[str]) -> str | None:
    """Why this handshake's ``Origin`` may not connect, or None. No Origin: a device or an
    app, not a browser (it authenticates with a token): accepted. ``Origin: null`` (a
    sandboxed frame, a ``file:`` page, a redirect): refused. Otherwise the page's origin must
    be this server's own (scheme, host and port of the handshake) or match an entry of
    ``WEBSOCKET_ALLOWED_ORIGINS`` (``https://app.example.com``, ``https://*.example.com``
    for its subdomains, ``*`` for any)."""
    raw = next((v for k, v in scope.get("headers") or () if k == b"origin"), None)
    if raw is None:
        return None
    text = raw.decode("latin-1")
    origin = parse_origin(text)
    if origin is None:
        return f"WebSocket connections from Origin {text!r} are refused (an opaque or malformed origin)"
    if "*" in allowed or origin == _own_origin(scope):
        return None
    scheme, host, port = origin
    for p_scheme, p_host, p_port, subdomains in allowed_origins(allowed):
        if (p_scheme, p_port) == (scheme, port) and (
            p_host == host or (subdomains and is_same_domain(host, "." + p_host))
        ):
            return None
    return (
        f"WebSocket connections from Origin {_origin(*origin)!r} are refused: not this server's own origin "
        "and not in WEBSOCKET_ALLOWED_ORIGINS"
    )


class OriginCheck:
    """A browser sends Origin with every WebSocket handshake, and its cookies (the session)
    with it: only pages of this server's own origin, or of WEBSOCKET_ALLOWED_ORIGINS, may
    connect — another site's page cannot use a visitor's session (cross-site WebSocket
    hijacking). Independent of ALLOWED_HOSTS."""

    def __init__(self, app) -> None:
        self.app = app
        allowed_origins(settings.WEBSOCKET_ALLOWED_ORIGINS)  # a malformed entry stops start-up, naming it

    async def __call__(self, scope, receive, send):
        refusal = origin_refusal(scope, settings.WEBSOCKET_ALLOWED_ORIGINS)
        if refusal is not None:
            return await deny(scope, receive, send, 403, refusal)
        return await self.app(scope, receive, send)


def websocket_application():
    """The WebSocket routes behind the Origin check (``OriginCheck``) and the session user."""
    return OriginCheck(SessionUser(URLRouter(websocket_urlpatterns)))
