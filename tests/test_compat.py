"""The internals streams/core/compat.py reaches into are still there (fails when a library
changes under us), and a library version it was not written for stops start-up."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from streams.core import compat


def test_installed_versions_are_the_ones_written_for():
    compat.check_library_versions()


def test_another_version_stops_start_up_naming_the_library():
    def installed(package):
        return "6.0.0" if package == "Django" else compat.WRITTEN_FOR[package] + ".0"

    with pytest.raises(ImproperlyConfigured, match=r"Django 6\.0\.0 is installed.*Django 5\.2"):
        compat.check_library_versions(installed)


@pytest.mark.parametrize("package", ["redis", "django-prometheus", "channels", "django-ninja", "Django", "asgiref"])
def test_every_library_we_reach_into_is_gated_and_found(package):
    """Each is installed under the name WRITTEN_FOR gives (a wrong name would be skipped as an
    absent optional server), and another minor version of it stops start-up, naming it."""
    from importlib.metadata import version

    written_for = compat.WRITTEN_FOR[package]
    assert version(package).startswith(written_for + ".")
    major, minor = written_for.split(".")

    def installed(name):
        return f"{major}.{int(minor) + 1}.0" if name == package else compat.WRITTEN_FOR[name] + ".0"

    with pytest.raises(ImproperlyConfigured, match=rf"^{package} {major}\.{int(minor) + 1}\.0 is installed"):
        compat.check_library_versions(installed)


async def test_django_sends_the_start_of_a_response_through_send_response():
    """What the lean handler's handoff relies on: the start (status, headers, cookies) goes
    out through ``send_response``, which ``handle`` calls before it closes the response."""
    import inspect

    from django.core.handlers.asgi import ASGIHandler
    from django.http import StreamingHttpResponse

    async def nothing():
        return
        yield

    response = StreamingHttpResponse(nothing(), content_type="text/event-stream", status=201)
    response.set_cookie("c", "v")
    sent = []

    async def send(message):
        sent.append(message)

    assert await compat.send_response_start(ASGIHandler.__new__(ASGIHandler), response, send)
    assert [m["type"] for m in sent] == ["http.response.start"] and sent[0]["status"] == 201
    headers = dict(sent[0]["headers"])
    assert headers[b"Content-Type"] == b"text/event-stream" and headers[b"Set-Cookie"].startswith(b"c=v")
    handle = inspect.getsource(ASGIHandler.handle)
    assert handle.index("self.send_response(response, send)") < handle.index("await sync_to_async(response.close)()")


def test_django_builds_the_chain_from_settings_middleware():
    import inspect

    from django.core.handlers.base import BaseHandler

    assert "settings.MIDDLEWARE" in inspect.getsource(BaseHandler.load_middleware)


def test_ninja_awaits_an_async_bearer_call():
    """streams.api.Caller overrides HttpBearer.__call__ with a coroutine; ninja must see it as
    async (is_async_callable) and await it on async operations."""
    from ninja.utils import is_async_callable

    from streams.api import READ

    assert is_async_callable(READ)


def test_stop_signals_chain_to_the_servers_own_handler():
    import asyncio
    import os
    import signal

    calls = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def main():
        signal.signal(signal.SIGINT, lambda signum, frame: calls.append("server"))
        compat.chain_stop_signals(lambda: calls.append("ours"))
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.05)

    try:
        asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert calls == ["server", "ours"]


def test_channels_dispatch_still_closes_connections_per_message_by_handler_name():
    """compat.dispatch_without_db_close copies AsyncConsumer.dispatch without its
    aclose_old_connections(); when Channels changes that method, re-check the copy."""
    import inspect

    from channels.consumer import AsyncConsumer, get_handler_name

    source = inspect.getsource(AsyncConsumer.dispatch)
    assert "get_handler_name(message)" in source and "aclose_old_connections()" in source
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"


def test_an_async_consumers_base_send_is_the_connections_send():
    """streams/live/consumers.py sends each entry frame with ``compat.consumer_send(self)``
    (the consumer's ``base_send``) directly."""
    import inspect

    from channels.consumer import AsyncConsumer

    source = inspect.getsource(AsyncConsumer.__call__)
    assert "self.base_send = send" in source
    assert inspect.getsource(AsyncConsumer.send).strip().endswith("await self.base_send(message)")


# --- redis-py -----------------------------------------------------------------------------------


async def test_a_redis_pipeline_counts_the_commands_queued_on_it(r):
    """streams/engine/nodes.py splits one pipeline's replies per item by how much each item's
    queueing grew the pipeline (``compat.pipeline_length``: redis-py's ``command_stack``)."""
    from streams.engine.context import redis_context

    node = (await redis_context()).nodes.for_key("compat")
    async with node.main.client() as client:
        async with client.pipeline(transaction=False) as pipe:
            assert compat.pipeline_length(pipe) == 0
            pipe.ping()
            pipe.echo("one")
            assert compat.pipeline_length(pipe) == 2
            pipe.echo("two")
            assert compat.pipeline_length(pipe) == 3
            assert await pipe.execute() == [True, "one", "two"]
            assert compat.pipeline_length(pipe) == 0


async def test_a_raw_redis_connection_round_trips_a_command_and_goes_back_to_its_pool(r):
    """The hub's XREAD loop (streams/live/hub.py): ``send_command`` then ``read_response`` on a
    blocking-pool client's one connection, which goes back to the pool afterwards (the pool
    holds one connection: were it not released, the second use would fail)."""
    from streams.engine.context import redis_context
    from streams.store.names import entry_fields

    key = "compat-raw"
    first = await r.xadd(key, {"power": "200"})
    node = (await redis_context()).nodes.for_key(key)
    async with node.blocking.client() as client:
        for _ in range(2):
            async with compat.raw_connection(client) as (send_command, read_response):
                await send_command("XREAD", "COUNT", 10, "BLOCK", 100, "STREAMS", key, "0-0")
                reply = await read_response()
            entries = reply[key] if isinstance(reply, dict) else dict(reply)[key]  # RESP3 / RESP2
            assert [(entry_id, entry_fields(fields)) for entry_id, fields in entries] == [(first, {"power": "200"})]


async def test_a_cancelled_raw_read_drops_the_connection_so_no_half_read_reply_is_reused(r):
    import asyncio

    from streams.engine.context import redis_context

    key = "compat-cancelled"
    node = (await redis_context()).nodes.for_key(key)
    async with node.blocking.client() as client:
        async with compat.raw_connection(client) as (send_command, read_response):
            conn = read_response.__self__
            await send_command("XREAD", "BLOCK", 5000, "STREAMS", key, "$")
            reading = asyncio.ensure_future(read_response())
            await asyncio.sleep(0.05)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            assert not conn.is_connected
        async with compat.raw_connection(client) as (send_command, read_response):
            await send_command("PING")
            assert await read_response() in ("PONG", True)


def test_redis_connection_reads_drop_the_connection_on_failure_by_default():
    import inspect

    from redis.asyncio.connection import AbstractConnection, ConnectionPool

    read = inspect.signature(AbstractConnection.read_response).parameters
    assert read["disconnect_on_error"].default is True
    assert inspect.signature(ConnectionPool.release).parameters.keys() == {"self", "connection"}


# --- Channels -----------------------------------------------------------------------------------


async def test_a_consumers_send_is_the_send_it_was_called_with():
    from channels.consumer import AsyncConsumer
    from channels.exceptions import StopConsumer

    seen = []

    class Probe(AsyncConsumer):
        async def dispatch(self, message):
            await compat.dispatch_without_db_close(self, message)

        async def probe_look(self, message):
            seen.append(compat.consumer_send(self))
            raise StopConsumer

    async def receive():
        return {"type": "probe.look"}

    async def send(message):
        pass

    await Probe()({"type": "websocket"}, receive, send)
    assert seen == [send]


@pytest.mark.django_db(transaction=True)
async def test_channels_get_user_reads_the_user_from_a_scope_holding_only_a_session():
    """``compat.session_user`` (streamsite.routing.SessionUser): the session's user, checked
    with its auth hash; a stale hash gives AnonymousUser and flushes the session."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from tests.helpers import make_user

    rider = await sync_to_async(make_user)("compat-rider")
    session = SessionStore()
    session.update({
        SESSION_KEY: str(rider.pk), BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
        HASH_SESSION_KEY: rider.get_session_auth_hash(),
    })
    assert (await compat.session_user(session)).pk == rider.pk
    assert not (await compat.session_user(SessionStore())).is_authenticated
    session[HASH_SESSION_KEY] = "stale"
    assert not (await compat.session_user(session)).is_authenticated
    assert SESSION_KEY not in session  # flushed


# --- django-ninja -------------------------------------------------------------------------------


def test_ninja_check_csrf_gives_none_or_the_403_to_send():
    """``compat.csrf_failure`` (streams/access/identity.py, a session's unsafe request)."""
    from django.conf import settings
    from django.middleware.csrf import get_token
    from django.test import RequestFactory

    factory = RequestFactory()
    refused = compat.csrf_failure(factory.post("/api/streams/x/events"))
    assert refused is not None and refused.status_code == 403

    page = factory.get("/")
    token = get_token(page)
    request = factory.post("/api/streams/x/events", headers={"X-CSRFToken": token})
    request.COOKIES[settings.CSRF_COOKIE_NAME] = page.META["CSRF_COOKIE"]
    assert compat.csrf_failure(request) is None


# --- Django middleware hooks and django-prometheus ----------------------------------------------


def test_django_middleware_mixin_only_wraps_its_hooks_in_thread_hops():
    """What calling the hooks directly relies on: ``__acall__`` is process_request, the rest
    of the chain, process_response, each through ``sync_to_async``."""
    import inspect

    from django.utils.deprecation import MiddlewareMixin

    source = inspect.getsource(MiddlewareMixin.__acall__)
    assert source.index("self.process_request") < source.index("self.get_response(request)")
    assert source.index("self.get_response(request)") < source.index("self.process_response")
    assert "sync_to_async" in source


def test_djangos_guard_hooks_run_on_the_event_loop_without_io():
    """LeanGuardMiddleware's hooks: plain functions; the session and the user stay lazy (no
    database here: a query would fail this test, which has no database access)."""
    import inspect

    from django.conf import settings
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.http import HttpResponse
    from django.middleware.security import SecurityMiddleware
    from django.test import RequestFactory

    def get_response(request):
        return HttpResponse()

    security = compat.django_middleware_hooks(SecurityMiddleware, get_response)
    session = compat.django_middleware_hooks(SessionMiddleware, get_response)
    auth = compat.django_middleware_hooks(AuthenticationMiddleware, get_response)
    for hook in (security.request, security.response, session.request, auth.request):
        assert callable(hook) and not inspect.iscoroutinefunction(hook)

    key = "k" * 32
    request = RequestFactory().get("/api/streams", headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={key}"})
    assert security.request(request) is None
    session.request(request)
    auth.request(request)
    assert request.session.session_key == key and not hasattr(request.session, "_session_cache")
    assert callable(request.auser) and type(request.user).__name__ == "SimpleLazyObject"
    response = security.response(request, HttpResponse())
    assert response["X-Content-Type-Options"] == "nosniff"


def test_django_prometheus_middleware_hooks_count_without_io():
    import inspect

    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.urls import resolve
    from prometheus_client import REGISTRY

    def get_response(request):
        return HttpResponse()

    before = compat.prometheus_middleware_hooks("before", get_response)
    after = compat.prometheus_middleware_hooks("after", get_response)
    assert before.request and before.response and not (before.view or before.template_response or before.exception)
    assert all(after)
    for hook in (*before[:1], before.response, *after):
        assert not inspect.iscoroutinefunction(hook)
    view = inspect.signature(after.view).parameters
    assert [p.kind for p in view.values()][-2:] == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]

    def count(name, labels=None):
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    requests = count("django_http_requests_before_middlewares_total")
    by_method = count("django_http_requests_total_by_method_total", {"method": "GET"})
    request = RequestFactory().get("/api/streams")
    request.resolver_match = resolve("/api/streams")
    before.request(request)
    after.request(request)
    after.view(request, get_response)
    response = after.template_response(request, HttpResponse())
    after.exception(request, ValueError("counted"))
    assert after.response(request, response) is response and before.response(request, response) is response
    assert count("django_http_requests_before_middlewares_total") == requests + 1
    assert count("django_http_requests_total_by_method_total", {"method": "GET"}) == by_method + 1


async def test_uvicorn_httptools_protocol_calls_the_hooks_the_bounded_protocol_overrides():
    """streamsite/server/http.py's BoundedHttpToolsProtocol relies on: the parser callbacks,
    a callback's exception answered through ``send_400_response``, the cycle's response
    flags, ``flow.read_paused``, ``server_state.default_headers`` and ``timeout_keep_alive``
    read when a response completes. Driven over a real socket pair."""
    import asyncio
    import socket

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    seen = []

    class Probe(compat.uvicorn_httptools_protocol()):
        def on_message_begin(self):
            seen.append("begin")
            super().on_message_begin()

        def on_url(self, url):
            seen.append("url")
            super().on_url(url)

        def on_header(self, name, value):
            if name.lower() == b"x-stop":
                raise ValueError("stop")
            seen.append("header")
            super().on_header(name, value)

        def on_headers_complete(self):
            seen.append("headers_complete")
            super().on_headers_complete()
            seen.append(("cycle", self.cycle.response_started, self.cycle.response_complete, self.flow.read_paused))

        def on_message_complete(self):
            seen.append("complete")
            super().on_message_complete()

        def send_400_response(self, msg):
            seen.append("400")
            super().send_400_response(msg)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config(app=app, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()

    async def exchange(request: bytes, keep_alive: float) -> tuple[bytes, Probe]:
        ours, theirs = socket.socketpair()
        made = []

        def factory():
            protocol = Probe(config, state, {})
            protocol.timeout_keep_alive = keep_alive
            made.append(protocol)
            return protocol

        await loop.connect_accepted_socket(factory, ours)
        reader, writer = await asyncio.open_connection(sock=theirs)
        writer.write(request)
        async with asyncio.timeout(5):
            out = await reader.read()  # to the close: keep-alive timer or the 400's close
        writer.close()
        return out, made[0]

    out, protocol = await exchange(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", keep_alive=0.05)
    assert out.startswith(b"HTTP/1.1 204") and isinstance(protocol.server_state.default_headers, list)
    assert seen == ["begin", "url", "header", "headers_complete", ("cycle", False, False, False), "complete"]
    seen.clear()
    out, _ = await exchange(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Stop: 1\r\n\r\n", keep_alive=60)
    assert out.startswith(b"HTTP/1.1 400") and seen == ["begin", "url", "header", "400"]


def test_django_skips_logging_a_response_marked_already_logged(caplog):
    import logging

    from django.http import HttpRequest, JsonResponse
    from django.utils.log import log_response

    request = HttpRequest()
    request.path = "/api/x"
    with caplog.at_level(logging.WARNING, logger="django.request"):
        log_response("Service Unavailable: %s", request.path, response=JsonResponse({}, status=503), request=request)
        assert len(caplog.records) == 1
        log_response("Service Unavailable: %s", request.path, request=request,
                     response=compat.already_logged(JsonResponse({}, status=503)))
    assert len(caplog.records) == 1


async def test_a_requests_sync_calls_run_on_one_pooled_thread_that_the_next_request_reuses():
    """``reused_thread_context``: asgiref still looks a context's executor up in
    ``SyncToAsync.context_to_thread_executor``: one request's thread-sensitive calls share one
    thread, the next request gets the same thread back (none started per request), and a
    task that outlives its request still gets a thread of its own for a late call (not the
    pooled one, not an error)."""
    import asyncio
    import threading

    from asgiref.sync import sync_to_async

    def ident():
        return threading.get_ident()

    late_started = asyncio.Event()
    late_may_call = asyncio.Event()

    async def outliving():
        late_started.set()
        await late_may_call.wait()
        return await sync_to_async(ident)()

    async with compat.reused_thread_context():
        first = {await sync_to_async(ident)() for _ in range(3)}
        late = asyncio.ensure_future(outliving())
        await late_started.wait()
    assert len(first) == 1 and first != {threading.get_ident()}
    async with compat.reused_thread_context():
        second = {await sync_to_async(ident)() for _ in range(3)}
        late_may_call.set()
        late_thread = await late
    assert second == first  # the same thread, reused
    assert late_thread not in first and late_thread != threading.get_ident()


async def test_a_cancelled_requests_thread_is_not_given_to_the_next_request():
    """A request that ends by an exception (a cancel while its sync call runs) does not give
    its thread back: the next request must not queue behind a call that may still run."""
    import asyncio
    import threading

    from asgiref.sync import sync_to_async

    def ident():
        return threading.get_ident()

    async with compat.reused_thread_context():
        before = await sync_to_async(ident)()
    release = threading.Event()
    entered = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow():
        loop.call_soon_threadsafe(entered.set)
        release.wait(5)
        return threading.get_ident()

    async def request():
        async with compat.reused_thread_context():
            return await sync_to_async(slow)()

    task = asyncio.ensure_future(request())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        async with compat.reused_thread_context():
            after = await sync_to_async(ident)()
    finally:
        release.set()
    assert after != before  # the pooled thread was the cancelled request's: a new one
