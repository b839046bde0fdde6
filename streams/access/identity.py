"""Who is calling: the one place every interface resolves its caller.

REST, SSE, WebSocket, ``/live/``, workouts and monitoring resolve the caller here
(``identify_request`` / ``identify_scope``); none of them parses a bearer header or reads a
token row itself. What a caller may do is decided in streams/access/rules.py.

Identities of bearer tokens (and of session users) are cached in-process for
``AUTH_CACHE_TTL`` ms (default 4 s): a known token costs no database work per request, and a
token, user or share that is deactivated elsewhere stops working on every process within that
time. ``last_used_at`` is written when a token's identity is (re)loaded and its stored value
is over a minute old: at most once a minute per token, never per request.

While the database cannot be reached (streams/core/database.py), a token or session the
database confirmed within ``AUTH_OUTAGE_GRACE`` keeps the identity it had then — a revocation
seen before the outage stays a revocation — and any other credential gets 503
(``IdentityUnavailable``), never 401 or 500.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from streams.core.aio import OwnedTasks, settle
from streams.core.compat import csrf_failure, session_user
from streams.core.database import DatabaseDown, database_outage
from streams.models import SCOPES, ApiToken, Share, hash_token

VIEW_ALL_STREAMS = "streams.view_all_streams"
MANAGE_ALL_STREAMS = "streams.manage_all_streams"
VIEW_ALL_WORKOUTS = "workouts.view_workout"
ADD_ANY_WORKOUT = "workouts.add_workout"
VIEW_ALL_PLANS = "workouts.view_workoutplan"
CHANGE_ANY_PLAN = "workouts.change_workoutplan"
DELETE_ANY_PLAN = "workouts.delete_workoutplan"
KNOWN_PERMS = (
    VIEW_ALL_STREAMS, MANAGE_ALL_STREAMS, VIEW_ALL_WORKOUTS, ADD_ANY_WORKOUT, VIEW_ALL_PLANS, CHANGE_ANY_PLAN,
    DELETE_ANY_PLAN,
)
LAST_USED_RESOLUTION_S = 60
CACHE_MAX_ENTRIES = 10_000


class AccessError(Exception):
    """A request that may not go on: ``status`` is 401, 403 or 404; ``detail`` says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller: a user (by token or session) or nobody, with what they may do."""

    user_id: int | None = None
    username: str = ""
    via: str = "anonymous"  # "token" | "session" | "anonymous"
    scopes: frozenset[str] = frozenset(SCOPES)
    perms: frozenset[str] = frozenset()
    superuser: bool = False
    staff: bool = False
    sharers: frozenset[int] = frozenset()  # athletes who share their data with this user
    markers_from: frozenset[int] = frozenset()  # those of them whose share also grants markers
    expires_at: float | None = None  # epoch seconds, tokens only
    cache_key: str = ""  # "t:<token hash>" or "u:<user id>": how to look it up again
    session_key: str = ""  # via "session": the session it came from, re-checked with the user

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    def has_perm(self, perm: str) -> bool:
        return self.superuser or perm in self.perms

    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at

    def may_see_athlete(self, athlete_id: int | None) -> bool:
        """The athlete's own data, or data they share with this user."""
        return athlete_id is not None and (athlete_id == self.user_id or athlete_id in self.sharers)

    def readable_owners(self) -> frozenset[int]:
        return self.sharers | {self.user_id} if self.user_id is not None else frozenset()


ANONYMOUS = Identity()
TOKEN_SUBPROTOCOL = "streamsite.token"  # Sec-WebSocket-Protocol: streamsite.token, <token>
# A WebSocket scope's session key whose user the database could not be asked for at the handshake.
SESSION_UNCONFIRMED = "streamsite.session_unconfirmed"


@dataclass(frozen=True)
class Actor:
    """Who writes, as the stream write scripts check it inside Redis: the owner may write, a
    manager may write anything, and anyone may create a stream that does not exist yet."""

    user_id: int | None = None
    username: str = ""
    manager: bool = False


SYSTEM = Actor(manager=True)  # management commands and the admin's (permission-checked) pages


# --- resolving the caller -------------------------------------------------------------------
def parse_authorization(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when there is no header.
    Anything else (another scheme, no token, non-ASCII bytes) is a 401."""
    if header is None or header == "":
        return None
    if not header.isascii():
        raise AccessError(401, "malformed Authorization header: it must be ASCII")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        raise AccessError(401, "malformed Authorization header: use Authorization: Bearer <token>")
    return value


class IdentityUnavailable(AccessError):
    """The database cannot confirm this credential now and the cache has no answer within
    AUTH_OUTAGE_GRACE: 503 with Retry-After (the caller may well be valid)."""

    retry_after = 5

    def __init__(self) -> None:
        super().__init__(503, "database unavailable: cannot check these credentials now, try again later")


def within_grace(hit: tuple[float, Identity | None] | None, now: float, grace_s: float) -> bool:
    """Whether a cached entry (confirmed_at, answer) was confirmed within ``grace_s``."""
    return hit is not None and now - hit[0] <= grace_s


def answer_in_outage(hit: tuple[float, Identity | None] | None, now: float, grace_s: float) -> Identity | None:
    """What a cached entry answers while the database is down: its identity (None: revoked or
    unknown, as the database said) if it was confirmed within ``grace_s``; else
    IdentityUnavailable."""
    if not within_grace(hit, now, grace_s):
        raise IdentityUnavailable()
    return hit[1]


class IdentityCache:
    """key → (confirmed_at, Identity or None), bounded, with one load in flight per key and
    loop; while the database is down, the last confirmed answer within AUTH_OUTAGE_GRACE."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Identity | None]] = {}
        self._loading: dict[tuple[int, str], asyncio.Future] = {}
        self._probes = OwnedTasks()  # each ends within the database's connect + statement timeouts

    def clear(self) -> None:
        self._entries.clear()

    async def close(self) -> None:
        await self._probes.cancel()

    async def get(self, key: str, load) -> Identity | None:
        hit = self._entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < settings.AUTH_CACHE_TTL_MS / 1000:
            return hit[1]
        if database_outage.down and within_grace(hit, time.monotonic(), settings.AUTH_OUTAGE_GRACE_MS / 1000):
            # A known caller never waits for a probe: it is made beside the answer.
            if database_outage.may_try():
                self._probes.start(self._probe(key, load), name="database probe (identity)")
            return hit[1]
        try:
            return await self._load_once(key, load)
        except (DatabaseDown, IdentityUnavailable):
            return self.in_outage(key)

    async def _probe(self, key: str, load) -> None:
        try:
            await self._load_once(key, load)
        except (DatabaseDown, IdentityUnavailable):
            pass  # still down: the entry keeps its last confirmation

    def in_outage(self, key: str) -> Identity | None:
        """The answer of ``key``'s last confirmation, if within AUTH_OUTAGE_GRACE."""
        return answer_in_outage(self._entries.get(key), time.monotonic(), settings.AUTH_OUTAGE_GRACE_MS / 1000)

    def confirmed(self, key: str, ident: Identity | None) -> None:
        """The database has just said who ``key`` is (or that it is nobody)."""
        self._store(key, ident)

    async def _load_once(self, key: str, load) -> Identity | None:
        flight = (id(asyncio.get_running_loop()), key)
        pending = self._loading.get(flight)
        if pending is not None:
            return await asyncio.shield(pending)
        future = self._loading[flight] = asyncio.get_running_loop().create_future()
        try:
            return await settle(future, self._load(key, load))
        finally:
            del self._loading[flight]

    async def _load(self, key: str, load) -> Identity | None:
        ident = await database_outage.through(load)
        self._store(key, ident)
        return ident

    def _store(self, key: str, ident: Identity | None) -> None:
        if len(self._entries) >= CACHE_MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))  # the oldest insertion
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic(), ident)


identity_cache = IdentityCache()


def forget_identities(**_kwargs) -> None:
    """A token, user or share changed in this process: drop cached identities at once
    (other processes see the change when their entries expire)."""
    identity_cache.clear()


def _perms_of(user) -> frozenset[str]:
    if user.is_superuser:
        return frozenset(KNOWN_PERMS)
    return frozenset(p for p in user.get_all_permissions() if p in KNOWN_PERMS)


def _user_identity(user, *, via: str, cache_key: str, scopes=SCOPES, expires_at=None) -> Identity:
    shares = list(Share.objects.filter(viewer_id=user.pk, owner__is_active=True).values_list("owner_id", "may_mark"))
    sharers = frozenset(owner_id for owner_id, _ in shares)
    markers_from = frozenset(owner_id for owner_id, may_mark in shares if may_mark)
    return Identity(
        user_id=user.pk, username=user.get_username(), via=via, scopes=frozenset(scopes),
        perms=_perms_of(user), superuser=user.is_superuser, staff=user.is_staff, sharers=sharers,
        markers_from=markers_from,
        expires_at=expires_at.timestamp() if expires_at else None, cache_key=cache_key,
    )


@database_sync_to_async
def _load_token(key_hash: str) -> Identity | None:
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=key_hash, is_active=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_S:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    scopes = tuple(s for s in token.scopes.split(",") if s in SCOPES)
    return _user_identity(
        token.user, via="token", cache_key="t:" + key_hash, scopes=scopes, expires_at=token.expires_at
    )


@database_sync_to_async
def _load_user(user_id: int) -> Identity | None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return None if user is None else _user_identity(user, via="session", cache_key=f"u:{user_id}")


async def identity_for_token(raw: str) -> Identity:
    """The identity behind a raw token; 401 when it is unknown, inactive or expired."""
    ident = await _token_identity(hash_token(raw))
    if ident is None:
        raise AccessError(401, "invalid, expired or inactive API token")
    return ident


async def _token_identity(key_hash: str) -> Identity | None:
    ident = await identity_cache.get("t:" + key_hash, lambda: _load_token(key_hash))
    return None if ident is None or ident.expired() else ident


async def identity_for_user(user_id: int) -> Identity | None:
    return await identity_cache.get(f"u:{user_id}", lambda: _load_user(user_id))


async def identify_request(request) -> Identity:
    """Bearer token, else a logged-in session (CSRF-checked for unsafe methods), else anonymous."""
    raw = parse_authorization(request.headers.get("Authorization"))
    if raw is not None:
        return await identity_for_token(raw)
    cookie = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not cookie:
        return ANONYMOUS  # no session to load: no database work
    ident = await _session_user(request, cookie)
    if ident is None:
        return ANONYMOUS
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        # A session rides on a cookie the browser sends by itself: require Django's CSRF token.
        if csrf_failure(request) is not None:
            raise AccessError(403, "CSRF check failed: send the X-CSRFToken header with a session")
    return ident


async def _session_user(request, cookie: str) -> Identity | None:
    """The identity of the request's session user (None: anonymous); while the database is
    down, the session's last confirmed identity (``identity_cache.in_outage``)."""
    if database_outage.down and not database_outage.may_try():
        return identity_cache.in_outage("s:" + cookie)  # no connect timeout to pay per request
    try:
        user = await database_outage.through(request.auser)
    except DatabaseDown:
        return identity_cache.in_outage("s:" + cookie)
    if not (user.is_authenticated and user.is_active):
        identity_cache.confirmed("s:" + cookie, None)
        return None
    ident = _with_session(await identity_for_user(user.pk), request.session.session_key)
    return ident if ident.authenticated else None


def _with_session(ident: Identity | None, session_key: str | None) -> Identity:
    """A session user's identity, remembering its session (``still_valid`` re-checks it, and
    the cache answers for it while the database is down)."""
    if ident is None:
        return ANONYMOUS
    if not session_key:
        return ident
    ident = replace(ident, session_key=session_key)
    identity_cache.confirmed("s:" + session_key, ident)
    return ident


def subprotocol_token(scope: dict) -> str | None:
    """The token a browser sends as ``new WebSocket(url, ["streamsite.token", token])`` (the
    one header a browser's WebSocket can set); "" when the marker comes without a token."""
    offered = scope.get("subprotocols") or ()
    if TOKEN_SUBPROTOCOL not in offered:
        return None
    at = list(offered).index(TOKEN_SUBPROTOCOL)
    return offered[at + 1] if at + 1 < len(offered) else ""


async def identify_scope(scope: dict, token: str | None) -> Identity:
    """The same for a WebSocket: ``?token=``, the ``Sec-WebSocket-Protocol`` carrier
    (``subprotocol_token``), an Authorization header, or the session user."""
    if token:
        return await identity_for_token(token)
    carried = subprotocol_token(scope)
    if carried is not None:
        if not carried:
            raise AccessError(401, f"the {TOKEN_SUBPROTOCOL!r} subprotocol must be followed by the API token")
        return await identity_for_token(carried)
    headers = dict(scope.get("headers") or [])
    header = headers.get(b"authorization")
    raw = parse_authorization(header.decode("latin-1") if header is not None else None)
    if raw is not None:
        return await identity_for_token(raw)
    unconfirmed = scope.get(SESSION_UNCONFIRMED)
    if unconfirmed:  # the database was down at the handshake (streamsite/routing.py)
        return identity_cache.in_outage("s:" + unconfirmed) or ANONYMOUS
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_active:
        session = scope.get("session")
        return _with_session(await identity_for_user(user.pk), getattr(session, "session_key", None))
    return ANONYMOUS


def websocket_csrf_passes(scope: dict, csrf_token: str | None) -> bool:
    """Whether a session WebSocket's handshake carries the proof a REST write needs: Django's
    CSRF check (``compat.csrf_failure``: the token against the session's CSRF cookie, and the
    Origin) run on the handshake as if it were a POST with ``X-CSRFToken: <csrf_token>``."""
    if not csrf_token:
        return False
    from io import BytesIO

    from django.core.handlers.asgi import ASGIRequest

    http_scope = {
        **scope, "type": "http", "method": "POST", "root_path": scope.get("root_path", ""),
        "scheme": "https" if scope.get("scheme") == "wss" else "http",
    }
    request = ASGIRequest(http_scope, BytesIO())
    request.META[settings.CSRF_HEADER_NAME] = csrf_token
    if scope.get("session") is not None:
        request.session = scope["session"]  # CSRF_USE_SESSIONS keeps the secret there
    return csrf_failure(request) is None


async def still_valid(ident: Identity) -> Identity | None:
    """The caller's current identity, for a long-lived connection to re-check (cached, so
    cheap); None when the token, user or session behind it no longer works."""
    kind, _, key = ident.cache_key.partition(":")
    if kind == "t":
        return await _token_identity(key)
    if kind == "u":
        if ident.session_key:
            return await _session_identity(ident.session_key, int(key))
        return await identity_for_user(int(key))
    return ident


async def _session_identity(session_key: str, user_id: int) -> Identity | None:
    """The identity of a session that still logs ``user_id`` in (not logged out, not expired,
    its auth hash still the user's: a password change ends the others), else None; cached
    like tokens (AUTH_CACHE_TTL)."""

    async def load() -> Identity | None:
        store = import_module(settings.SESSION_ENGINE).SessionStore
        user = await session_user(store(session_key))
        if not user.is_authenticated or user.pk != user_id:
            return None
        ident = await _load_user(user_id)  # in the same database read (one probe while it is down)
        return None if ident is None else replace(ident, session_key=session_key)

    return await identity_cache.get(f"s:{session_key}", load)
