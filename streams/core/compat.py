"""Every reach into another library's internals, in one place.

Each is written for the versions in ``WRITTEN_FOR``; ``check_library_versions()`` runs when
the ASGI application loads and stops start-up with an error naming the library when another
major.minor is installed (re-check the reach, then update the entry). ``tests/test_compat.py``
fails when one of these internals changes under us.

- Django 5.2: ``BaseHandler.load_middleware`` reads ``settings.MIDDLEWARE``
  (``load_middleware_from``, used by the lean handler); ``ASGIHandler.handle`` sends a
  response with ``self.send_response(response, send)`` and then closes it, and
  ``send_response`` sends ``http.response.start`` first (``send_response_start``, for the lean
  handler's handed-off bodies); a ``MiddlewareMixin`` middleware's hooks called directly, on
  the event loop, instead of through its ``__acall__`` (``django_middleware_hooks``, for
  streamsite/middleware.py's ``LeanGuardMiddleware``); ``django.utils.log.log_response`` skips
  a response marked ``_has_been_logged`` (``already_logged``: a 503 of a database outage is
  one log line per interval, not one per request).
- django-prometheus 2.5: its ``PrometheusBeforeMiddleware`` / ``PrometheusAfterMiddleware``
  hooks called directly, on the event loop (``prometheus_middleware_hooks``, for
  streamsite/middleware.py's ``PrometheusBefore`` / ``PrometheusAfter``).
- redis-py 8.1: an asyncio ``Pipeline``'s ``command_stack`` (``pipeline_length``, for
  streams/engine/nodes.py's batched pipelines); a pool's connection driven by hand with
  ``send_command`` / ``read_response`` (``raw_connection``, for the hub's XREAD loop in
  streams/live/hub.py).
- uvicorn 0.54: its stop-signal handlers are plain ``signal.signal`` handlers we can wrap
  (``chain_stop_signals``); its ``HttpToolsProtocol``, subclassed with the limits it lacks
  (``uvicorn_httptools_protocol``, for streamsite/server/http.py).
- Twisted 26.10 / daphne 4.2: a "before shutdown" trigger runs before daphne cancels its
  applications (``add_twisted_shutdown_trigger``); the ``send`` daphne gives an application
  is ``partial(server.handle_reply, protocol)`` (``daphne_protocol``, for write backpressure
  in streamsite/server/flow_control.py).
- django-ninja 1.7: an ``HttpBearer`` subclass may define an async ``__call__`` that ninja
  awaits (``streams.api.Caller``); ``ninja.utils.check_csrf`` runs Django's CSRF check on a
  request outside the middleware stack (``csrf_failure``, for streams/access/identity.py).
- Channels 4.3: ``AsyncConsumer.dispatch`` closes stale database connections (a thread hop)
  before every message; ``dispatch_without_db_close`` is the same dispatch without it. An
  async consumer's ``base_send`` is the connection's ASGI ``send`` itself (``consumer_send``:
  streams/live/consumers.py sends entry frames through it, skipping ``send``'s two wrappers
  per frame). ``channels.auth.get_user`` reads only ``scope["session"]`` (``session_user``, for
  streamsite/routing.py's ``SessionUser``, which builds no session middleware).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import NamedTuple

from django.core.exceptions import ImproperlyConfigured

WRITTEN_FOR = {
    "Django": "5.2",
    "uvicorn": "0.54",
    "Twisted": "26.10",
    "daphne": "4.2",
    "django-ninja": "1.7",
    "channels": "4.3",
    "redis": "8.1",
    "django-prometheus": "2.5",
    "asgiref": "3.13",
}


def check_library_versions(installed: Callable[[str], str] = version) -> None:
    for package, expected in WRITTEN_FOR.items():
        try:
            found = installed(package)
        except PackageNotFoundError:
            continue  # an optional server that is not installed: its reach is never used
        if found != expected and not found.startswith(expected + "."):
            raise ImproperlyConfigured(
                f"{package} {found} is installed, but streams/core/compat.py reaches into {package} {expected}'s "
                f"internals: check that code against {package} {found}, then update WRITTEN_FOR"
            )


async def send_response_start(handler, response, send) -> bool:
    """Send only the ``http.response.start`` of ``response`` (Django's own encoding of its
    status, headers and cookies); True when it went out. For a handed-off body
    (streamsite/server/handlers.py): ``ASGIHandler.send_response`` sends the start, then the body
    parts and a closing message, which are dropped here — the handler sends the body itself
    after ``handle()`` has closed the response."""
    from django.core.handlers.asgi import ASGIHandler

    sent = False

    async def start_only(message):
        nonlocal sent
        if message["type"] == "http.response.start":
            await send(message)
            sent = True

    await ASGIHandler.send_response(handler, response, start_only)
    return sent


def load_middleware_from(handler, middleware: list[str], is_async: bool) -> None:
    """Build ``handler``'s middleware chain from ``middleware`` instead of
    ``settings.MIDDLEWARE`` (which ``BaseHandler.load_middleware`` reads), once, at start-up."""
    from django.conf import settings
    from django.core.handlers.base import BaseHandler

    standard = settings.MIDDLEWARE
    settings.MIDDLEWARE = middleware
    try:
        BaseHandler.load_middleware(handler, is_async=is_async)
    finally:
        settings.MIDDLEWARE = standard


def chain_stop_signals(on_stop: Callable[[], None]) -> None:
    """Call ``on_stop`` on the event loop when SIGTERM/SIGINT arrive, then the server's own
    handler (uvicorn's, unchanged). From the main thread only (signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # the server does not handle it: its default behaviour stays

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(on_stop)
            previous(signum, frame)

        signal.signal(sig, handler)


def uvicorn_httptools_protocol() -> type:
    """uvicorn's ``HttpToolsProtocol`` (uvicorn 0.54, uvicorn/protocols/http/httptools_impl.py),
    the base of streamsite/server/http.py's ``BoundedHttpToolsProtocol``, which relies on: the
    constructor ``(config, server_state, app_state, _loop=None)``; the parser callbacks
    ``on_message_begin()``, ``on_url(url)`` (a piece at a time, appended to ``self.url``),
    ``on_header(name, value)``, ``on_headers_complete()`` (starts the application's cycle with
    ``self.app``, which the edge swaps for one request to refuse it as uvicorn's own
    ``limit_concurrency`` does, or returns early for a WebSocket upgrade) and ``on_message_complete()``, called from
    ``data_received`` while it feeds the httptools parser; an exception raised in a callback
    makes ``feed_data`` raise ``HttpParserCallbackError``, which ``data_received`` answers with
    ``send_400_response(msg)``; the attributes ``transport``, ``loop``, ``logger``, ``client``,
    ``flow`` (``read_paused``), ``cycle`` (None, or the current request's cycle with
    ``response_started`` and ``response_complete``), ``server_state.default_headers`` and
    ``timeout_keep_alive`` (seconds, read when a response completes to arm the keep-alive
    timer)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol


def add_twisted_shutdown_trigger(before: Callable[[], object]) -> bool:
    """Under daphne (Twisted's reactor is running this process): call ``before`` in the
    "before shutdown" phase; it may return a Deferred that shutdown waits for."""
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import reactor

    reactor.addSystemEventTrigger("before", "shutdown", before)
    return True


def daphne_protocol(send):
    """The daphne protocol object behind an ASGI ``send`` (daphne 4.2 passes
    ``functools.partial(server.handle_reply, protocol)``), else None. For HTTP it is a
    ``twisted.web.http.Request``; for WebSocket an autobahn protocol with a Twisted transport."""
    import functools

    if not isinstance(send, functools.partial) or not send.args:
        return None
    owner = getattr(send.func, "__self__", None)
    if getattr(send.func, "__name__", "") != "handle_reply" or not type(owner).__module__.startswith("daphne."):
        return None
    return send.args[0]


async def dispatch_without_db_close(consumer, message) -> None:
    """Channels' ``AsyncConsumer.dispatch`` minus its per-message ``aclose_old_connections()``:
    a thread hop for every WebSocket frame, ~25% of a device's one-entry publish (py-spy,
    docs/benchmarks.md). Only for consumers that reach the database through
    ``database_sync_to_async`` alone, which closes stale connections itself."""
    from channels.consumer import get_handler_name

    handler = getattr(consumer, get_handler_name(message), None)
    if handler is None:
        raise ValueError(f"No handler for message type {message['type']}")
    await handler(message)


def consumer_send(consumer):
    """An async consumer's ``base_send``: the connection's ASGI ``send`` itself, which
    ``AsyncConsumer.__call__`` stores there (Channels 4.3; ``AsyncConsumer.send`` only awaits
    it). Look it up once per connection and call it per frame: two wrappers fewer each."""
    return consumer.base_send


async def session_user(session):
    """The user of ``session`` (a Django ``SessionStore``), or ``AnonymousUser``, checked as
    Channels' ``AuthMiddleware`` does: ``channels.auth.get_user`` given a scope of our own
    making that holds only ``{"session": session}`` (Channels 4.3 reads nothing else: the user
    id, the backend and the auth hash from the session, flushing it when the hash is stale; one
    database thread hop)."""
    from channels.auth import get_user

    return await get_user({"session": session})


def already_logged(response):
    """``response`` marked as logged: Django 5.2's ``log_response`` (its handlers log every
    4xx/5xx at warning/error) skips it. Returns the response."""
    response._has_been_logged = True
    return response


def csrf_failure(request):
    """None when ``request`` passes Django's CSRF check, else the 403 response to send.
    ``ninja.utils.check_csrf`` (django-ninja 1.7) runs ``CsrfViewMiddleware``'s
    ``process_request`` and ``process_view`` on the request outside the middleware stack."""
    from ninja.utils import check_csrf

    return check_csrf(request)


def pipeline_length(pipe) -> int:
    """How many commands a redis-py asyncio ``Pipeline`` has queued: its ``command_stack``
    (redis-py 8.1: a list every queued command is appended to, emptied by ``execute``)."""
    return len(pipe.command_stack)


@contextlib.asynccontextmanager
async def raw_connection(client):
    """``async with raw_connection(client) as (send_command, read_response)``: one connection
    of ``client``'s pool, driven by hand, given back at the end. redis-py 8.1: the asyncio
    ``ConnectionPool.get_connection()`` / ``release(conn)``, and the connection's
    ``send_command(*args)`` (packs and writes one command) and ``read_response()`` (reads one
    reply; any failure, cancellation included, disconnects the connection, so it never goes
    back to the pool with a half-read reply). Yields the two bound methods: nothing is wrapped
    per command (the hub's XREAD loop calls them for every read)."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        yield conn.send_command, conn.read_response
    finally:
        await pool.release(conn)


class MiddlewareHooks(NamedTuple):
    """A middleware instance's hooks, bound (None where it has none)."""

    request: Callable | None
    view: Callable | None
    template_response: Callable | None
    response: Callable | None
    exception: Callable | None


def _hooks_of(middleware) -> MiddlewareHooks:
    return MiddlewareHooks(*(getattr(middleware, f"process_{name}", None) for name in MiddlewareHooks._fields))


def django_middleware_hooks(middleware_class, get_response) -> MiddlewareHooks:
    """The hooks of one of Django's ``MiddlewareMixin`` middleware, to call directly on the
    event loop. Django 5.2: ``MiddlewareMixin.__acall__`` is only ``process_request``, the rest
    of the chain, ``process_response``, each through ``sync_to_async`` (a thread hop); called
    directly they are the same middleware without the hops. Only for hooks that do no I/O:
    ``SecurityMiddleware``'s two (the HTTPS redirect, the security headers),
    ``SessionMiddleware.process_request`` (a lazy ``SessionStore``) and
    ``AuthenticationMiddleware.process_request`` (a lazy ``request.user`` and
    ``request.auser``), and django-csp 4.0's ``CSPMiddleware`` (a lazy ``request.csp_nonce``;
    the header built from settings)."""
    return _hooks_of(middleware_class(get_response))


def prometheus_middleware_hooks(which: str, get_response) -> MiddlewareHooks:
    """The hooks of django-prometheus' ``PrometheusBeforeMiddleware`` (``which="before"``) or
    ``PrometheusAfterMiddleware`` (``"after"``), to call directly on the event loop: plain
    ``MiddlewareMixin`` hooks that only count (no I/O). django-prometheus 2.5: ``before`` has
    ``process_request`` / ``process_response``; ``after`` also ``process_view(request,
    view_func, *view_args, **view_kwargs)`` (the view's arguments spread, unlike Django's
    hook), ``process_template_response`` and ``process_exception``."""
    from django_prometheus.middleware import (
        PrometheusAfterMiddleware,
        PrometheusBeforeMiddleware,
    )

    middleware_class = {"before": PrometheusBeforeMiddleware, "after": PrometheusAfterMiddleware}[which]
    return _hooks_of(middleware_class(get_response))


class _SyncThreads:
    """Idle single-thread executors for ``reused_thread_context``, at most ``KEEP`` (the rest
    are shut down without waiting: a thread still finishing a call ends after it)."""

    KEEP = 64

    def __init__(self) -> None:
        self.idle: list = []

    def take(self):
        from concurrent.futures import ThreadPoolExecutor

        return self.idle.pop() if self.idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request-sync")

    def give(self, executor) -> None:
        if len(self.idle) < self.KEEP:
            self.idle.append(executor)
        else:
            executor.shutdown(wait=False)

    def clear(self) -> None:
        """End the idle threads, each after closing its database connections (blocking: at
        shutdown, and for tests between cases, where a test's transaction can keep one open)."""
        from django.db import connections

        idle, self.idle = self.idle, []
        for executor in idle:
            executor.submit(connections.close_all)
            executor.shutdown(wait=True)


_sync_threads = _SyncThreads()


def end_idle_request_threads() -> None:
    """``_SyncThreads.clear`` of the pool ``reused_thread_context`` takes threads from."""
    _sync_threads.clear()


@contextlib.asynccontextmanager
async def reused_thread_context():
    """Django's per-request ``ThreadSensitiveContext`` (``ASGIHandler.__call__`` enters one
    around ``handle``) with its thread taken from a pool instead of started and joined per
    request: the request's thread-sensitive sync calls (the ``request_started`` /
    ``request_finished`` receivers, ``response.close``, ``database_sync_to_async``) still run
    one at a time on one thread of their own, which the next request reuses. Starting and
    joining that thread was a third of a small API request's CPU (docs/benchmarks.md (ab)).

    A reach into asgiref 3.x: ``SyncToAsync.context_to_thread_executor`` maps a context to its
    executor (asgiref creates one on the first call and shuts it down at the context's exit);
    here the pooled executor is put there on entry and taken out before the exit, so asgiref
    neither creates nor shuts one down. A task that outlives the request and makes a
    thread-sensitive call later gets a new executor of its own, as with asgiref alone.
    (asgiref's ``ThreadSensitiveContext(executor=...)`` instead makes such a late call raise,
    which would break the live trackers a request starts.) Tested in tests/test_compat.py.
    Database connections: with ``CONN_MAX_AGE`` 0 (ours) ``request_finished`` closes the
    request's connection on its thread, so an idle thread holds none. A request that was
    cancelled or failed does not give its thread back (a call it started may still be
    running there, say a query until its statement timeout): that thread ends after it."""
    from asgiref.sync import SyncToAsync, ThreadSensitiveContext

    context = ThreadSensitiveContext()
    async with context:
        if context.token is None:  # inside another context already: that one's thread
            yield
            return
        executor = _sync_threads.take()
        SyncToAsync.context_to_thread_executor[context] = executor
        finished = False
        try:
            yield
            finished = True
        finally:
            if SyncToAsync.context_to_thread_executor.get(context) is executor:
                del SyncToAsync.context_to_thread_executor[context]
            if finished:
                _sync_threads.give(executor)
            else:  # cancelled or failed: a sync call may still run there; no next request waits for it
                executor.shutdown(wait=False)
