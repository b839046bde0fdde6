"""Two Django handlers behind one ASGI entry: the lean paths get their own.

``LEAN_PATH_PREFIXES`` (the API, health, metrics and live pages) are served by a Django
``ASGIHandler`` built from ``LEAN_MIDDLEWARE`` (async-native only: see
streamsite/middleware.py); every other path by Django's standard handler and ``MIDDLEWARE``.
Both resolve the same URLconf. Django's security checks read ``MIDDLEWARE``, which stays the
standard stack, so ``check --deploy`` needs no silencing.

The lean handler also *hands off* live bodies (SSE): a view returns ``handed_off(body,
request)`` (the contract: streams/core/handoff.py); Django answers the request as usual (middleware, headers, ``response.close()``
and its ``request_finished`` receivers), sending only the response's start; then the handler
sends the body itself, after Django's request, response, resolver match, middleware frames
and per-request tasks and thread are gone. A listener that waits for hours then holds only
its own state (measured: docs/benchmarks.md (k)).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from streams.core.compat import load_middleware_from, reused_thread_context, send_response_start
from streams.core.handoff import HANDOFF, HandoffBody
from streamsite.server.flow_control import ClientStalled

LAST_WORDS_S = 1.0  # how long a cancelled body may still send what it has (its end event)

log = logging.getLogger(__name__)


class Handoff:
    """One request's slot: the body a view handed off, and whether its start was sent."""

    __slots__ = ("body", "started", "disconnected", "_pump_done")

    def __init__(self) -> None:
        self.body: HandoffBody | None = None
        self.started = False
        self.disconnected = False  # the client's http.disconnect was already received
        self._pump_done = False

    def watching(self, receive):
        """``receive`` that notes a disconnect. Django listens for one while the view runs
        (``listen_for_disconnect``): a client that goes just after the response's start can
        have its only ``http.disconnect`` consumed there, before the body is ours to send."""

        async def receive_watched():
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
            return message

        return receive_watched

    async def finish(self, receive, send) -> None:
        """After Django's handling: send the body if its start went out; close it either way."""
        body, self.body = self.body, None
        if body is None:
            return
        try:
            if self.started and not self.disconnected:
                await self._stream(body, receive, send)
        finally:
            await body.aclose()

    async def _stream(self, body: HandoffBody, receive, send) -> None:
        """The body is sent by a task of its own while this one (the server's) listens for
        the disconnect, as Django's handler does. It ends when the body ends, the client goes
        or stalls (``ClientStalled`` from ``send``), or the server cancels us: daphne does so on
        stop, after our shutdown hook told every live body to end (``event: shutdown``), so
        the body gets LAST_WORDS_S to say so before it is cancelled too."""
        this = asyncio.current_task()
        pump = asyncio.get_running_loop().create_task(self._send_all(body, send))
        wake = functools.partial(self._pumped, this)
        pump.add_done_callback(wake)
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except asyncio.CancelledError:
            if self._pump_done and this.cancelling() <= 1:
                this.uncancel()  # our own signal: the body ended
                if not pump.cancelled() and pump.exception() is not None:  # a bug: say so, not silently
                    log.error("a live response body failed", exc_info=pump.exception())
                return
            pump.remove_done_callback(wake)
            await asyncio.wait([pump], timeout=LAST_WORDS_S)
            raise
        finally:
            if not pump.done():  # the client went, or we were cancelled: stop sending
                pump.remove_done_callback(wake)
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)

    def _pumped(self, waiter: asyncio.Task, _pump: asyncio.Task) -> None:
        self._pump_done = True
        waiter.cancel()  # wakes the disconnect wait: nothing more to send

    @staticmethod
    async def _send_all(body: HandoffBody, send) -> None:
        try:
            async for part in body:
                await send({"type": "http.response.body", "body": part.encode(), "more_body": True})
            await send({"type": "http.response.body"})
        except ClientStalled:
            pass  # the response ends unfinished; the server closes the connection


class LeanASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        load_middleware_from(self, settings.LEAN_MIDDLEWARE, is_async)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        slot = Handoff()
        try:
            async with reused_thread_context():
                await self.handle({**scope, HANDOFF: slot}, slot.watching(receive), send)
        except BaseException:
            slot.started = False  # cancelled or failed while Django handled it: close, send nothing
            await slot.finish(receive, send)
            raise
        await slot.finish(receive, send)

    async def send_response(self, response, send):
        slot = getattr(response, "handoff", None)
        if slot is None:
            return await super().send_response(response, send)
        slot.started = await send_response_start(self, response, send)  # the body is ours


class PathRouter:
    """An ASGI app: lean paths to one handler, the rest to the other."""

    def __init__(self, *, standard, lean, prefixes: list[str]) -> None:
        self.standard = standard
        self.lean = lean
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope, receive, send):
        app = self.lean if scope["path"].startswith(self.prefixes) else self.standard
        return await app(scope, receive, send)
