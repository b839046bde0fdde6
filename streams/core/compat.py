"""Every reach into another library's internals, in one place.

Each is written for the versions in ``WRITTEN_FOR``; ``check_library_versions()`` runs when
the ASGI application loads and stops start-up with an error naming the library when another
major.minor is installed (re-check the reach, then update the entry). ``tests/test_compat.py``
fails when one of these internals changes under us.

- Django: ``BaseHandler.load_middleware`` reads ``settings.MIDDLEWARE``
  (``load_middleware_from``, used by the lean handler); ``ASGIHandler.handle`` sends a
  response with ``self.send_response(response, send)`` and then closes it, and
  ``send_response`` sends ``http.response.start`` first (``send_response_start``, for the lean
  handler's handed-off bodies).
- uvicorn: its stop-signal handlers are plain ``signal.signal`` handlers we can wrap
  (``chain_stop_signals``).
- Twisted/daphne: a "before shutdown" trigger runs before daphne cancels its applications
  (``add_twisted_shutdown_trigger``).
- django-ninja: an ``HttpBearer`` subclass may define an async ``__call__`` that ninja awaits
  (``streams.api.Caller``).
- Channels: ``AsyncConsumer.dispatch`` closes stale database connections (a thread hop)
  before every message; ``dispatch_without_db_close`` is the same dispatch without it. An
  async consumer's ``base_send`` is the connection's ASGI ``send`` itself (streams/live/consumers.py
  sends entry frames through it, skipping ``send``'s two wrappers per frame).
- daphne: the ``send`` it gives an application is ``partial(server.handle_reply, protocol)``
  (``daphne_protocol``, for write backpressure in streamsite/server/flow_control.py).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from django.core.exceptions import ImproperlyConfigured

WRITTEN_FOR = {
    "Django": "5.2",
    "uvicorn": "0.54",
    "Twisted": "26.10",
    "daphne": "4.2",
    "django-ninja": "1.7",
    "channels": "4.3",
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
