"""Helpers shared by the tests: users and tokens, stream keys, ASGI scopes, tools, waiting."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import sys
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model

from streams.access.identity import Actor
from streams.models import ApiToken
from streams.store.keys import key_layout


def key(name: str) -> str:
    """A stream's Redis key, from the configured prefix."""
    return key_layout(settings.REDIS).stream(name)


def registry_set(name: str) -> str:
    """The registry SET of a stream's bucket."""
    keys = key_layout(settings.REDIS)
    return keys.registry(keys.bucket(name)).names


def make_user(username: str, *, password: str | None = None, staff: bool = False, superuser: bool = False):
    User = get_user_model()
    if superuser:
        return User.objects.create_superuser(username, password=password or "pw")
    return User.objects.create_user(username, password=password, is_staff=staff)


def staff_with(username: str, *codenames: str):
    """A staff user holding the permissions ``codenames``."""
    from django.contrib.auth.models import Permission

    user = make_user(username, password="pw", staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def logged_in(user):
    """A test client logged in as ``user`` (anonymous for None)."""
    from django.test import Client

    client = Client()
    if user is not None:
        client.force_login(user)
    return client


async def user_with_token(username: str, **token_kwargs) -> tuple[object, str]:
    """(user, raw token) for a new user; token_kwargs go to ``ApiToken.issue``."""

    def make():
        user = make_user(username)
        return user, ApiToken.issue(user=user, **token_kwargs)[1]

    return await sync_to_async(make)()


def bearer(token: str) -> dict:
    """Keyword arguments for Django's test clients."""
    return {"headers": {"Authorization": f"Bearer {token}"}}


def actor(user) -> Actor:
    return Actor(user_id=user.pk, username=user.get_username())


def http_scope(path: str, *, method: str = "GET", headers=(), query: str = "", client=("127.0.0.1", 50000)) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
        "headers": [(b"host", b"testserver"), *headers], "client": client, "server": ("testserver", 80),
    }


def venv_tool(name: str) -> str | None:
    """A command installed beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


async def eventually(predicate, *, timeout: float = 5.0, interval: float = 0.01, what: str = "condition") -> None:
    """Wait until ``predicate()`` (sync or async) is true; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"{what} not reached within {timeout} s") from None


async def asgi_response(scope: dict, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request through the production ASGI entry."""
    from channels.testing import ApplicationCommunicator

    from streamsite.asgi import application

    comm = ApplicationCommunicator(application, scope)
    await comm.send_input({"type": "http.request", "body": body})
    return await read_response(comm)


async def read_response(comm) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the response an ApplicationCommunicator receives."""
    start = await comm.receive_output(5)
    content = b""
    while True:
        message = await comm.receive_output(5)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, content


async def publish(name: str, n: int, *, start: int = 0, field: str = "i", actor=None) -> list[str]:
    """``n`` entries ``{field: start..start+n-1}`` through the publish service; their ids."""
    from streams.store import services as store

    kwargs = {} if actor is None else {"actor": actor}
    return await store.stream_publish(name=name, entries=[{field: str(start + k)} for k in range(n)], **kwargs)


def publish_sync(name: str, n: int, **kwargs) -> list[str]:
    """The same from synchronous code: on a loop of its own, closing what it opened there."""
    from streams.engine.context import close_redis_context

    async def run():
        try:
            return await publish(name, n, **kwargs)
        finally:
            await close_redis_context()

    return asyncio.run(run())


async def browser_ws_headers(user, cookie_value: str | None = None) -> list[tuple[bytes, bytes]]:
    """A browser's WebSocket handshake headers: its session cookie for ``user`` (logged in
    now) or the given raw cookie value, and an allowed Origin."""
    from django.test import AsyncClient

    if cookie_value is None:
        browser = AsyncClient()
        await browser.aforce_login(user)
        cookie_value = browser.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = f"{settings.SESSION_COOKIE_NAME}={cookie_value}"
    return [(b"cookie", cookie.encode()), (b"origin", b"http://testserver"), (b"host", b"testserver")]
