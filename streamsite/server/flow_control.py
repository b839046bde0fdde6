"""Write backpressure for live connections under every server.

uvicorn applies flow control in ``send``; daphne writes into Twisted's transport without any,
so bytes for a client that stopped reading piled up in the server's memory (309 MB for 5
stalled readers of a busy stream). ``FlowControl`` wraps ``send`` for every HTTP response and
WebSocket:

- Under daphne it registers a Twisted push producer on the connection (public Twisted API:
  ``Request.registerProducer`` / ``transport.registerProducer``); Twisted pauses it when the
  connection's send buffer is full (64 KiB) and resumes it when drained. While paused, up to
  ``LIVE_MAX_BUFFER_BYTES`` more are handed over; past that, ``send`` waits for the client.
- Under every server, a ``send`` that waits longer than ``LIVE_STALL_TIMEOUT`` ends the
  connection (daphne: aborted; others: ``send`` raises ``ClientStalled``, the response ends
  unfinished and the server closes it).

Meanwhile the hub's bounded queue (``SSE_QUEUE_SIZE``) ends that listener with ``overflow``,
so a stalled reader holds at most its queue plus this buffer, and healthy listeners of the
same stream are never slowed: each connection waits alone.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from django.conf import settings

from streams.core.aio import cancel_and_wait
from streams.core.compat import daphne_protocol

log = logging.getLogger(__name__)


class ClientStalled(asyncio.CancelledError):
    """The client read nothing for LIVE_STALL_TIMEOUT while we had data for it.

    A CancelledError on purpose: to the application it is the same as the client going away
    (Django's handler treats a cancelled ``send`` as a disconnect and closes the response,
    which ends the follow); the server then drops the unfinished response."""


class TransportGate:
    """A Twisted ``IPushProducer``: told when the connection's send buffer fills and drains."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = False
        self.sent_while_paused = 0

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        if self.writable.is_set():  # Twisted repeats the call while still paused: count from the first
            self.writable.clear()
            self.sent_while_paused = 0

    def resumeProducing(self) -> None:  # noqa: N802
        self.writable.set()

    def stopProducing(self) -> None:  # noqa: N802 - the connection is going away
        self.lost = True
        self.writable.set()


def _size(message: dict) -> int:
    body = message.get("body") or message.get("bytes") or message.get("text") or b""
    return len(body)


class FlowControl:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        protocol = daphne_protocol(send)
        if protocol is None:
            watch = _StallWatch(send)
            try:
                return await self.app(scope, receive, watch.send)
            finally:
                watch.close()
        return await _DaphneConnection(protocol, scope["type"], send).run(self.app, scope, receive)


class _StallWatch:
    """Cuts a connection whose ``send`` has waited LIVE_STALL_TIMEOUT for the client.

    No timer per connection (nor per ``send``: at 40,000 sends a second, a timer each cost tens
    of milliseconds of delivery latency): the loop's ``StallClock`` looks at every open
    connection once per ``STALL_TICK``. When a send started a stall ago, it cancels the sending
    task; that ``send`` then raises ``ClientStalled``. (A timer per connection, re-armed every
    stall interval, was four objects per listener for every garbage collection to examine.)"""

    __slots__ = ("_send", "_sending_since", "_task", "_loop", "stalled")

    def __init__(self, send) -> None:
        self._send = send
        self._sending_since: float | None = None
        self._task: asyncio.Task | None = None
        self._loop = asyncio.get_running_loop()
        self.stalled = False
        StallClock.of(self._loop).watch(self)

    async def send(self, message: dict) -> None:
        if self.stalled:
            raise ClientStalled(f"client read nothing for {settings.LIVE_STALL_TIMEOUT_MS} ms")
        self._sending_since = self._loop.time()
        self._task = asyncio.current_task()
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if self.stalled:
                raise ClientStalled(f"client read nothing for {settings.LIVE_STALL_TIMEOUT_MS} ms") from None
            raise
        finally:
            self._sending_since = None

    def check(self, now: float, stall: float) -> None:
        since = self._sending_since
        if since is not None and now - since >= stall and not self.stalled:
            self.stalled = True
            self._task.cancel()

    def close(self) -> None:
        StallClock.of(self._loop).forget(self)


STALL_TICK = 0.5  # s: how late past LIVE_STALL_TIMEOUT a stalled connection may be cut


class StallClock:
    """One per event loop: checks every open connection's ``send`` each ``STALL_TICK``.

    Its task runs while connections are open and ends by itself after the last one closes;
    ``stop_all()`` (server shutdown) cancels and awaits it."""

    _clocks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StallClock]" = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watches: set[_StallWatch] = set()
        self._task: asyncio.Task | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> "StallClock":
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    def watch(self, watch: _StallWatch) -> None:
        self._watches.add(watch)
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name="stall-clock")

    def forget(self, watch: _StallWatch) -> None:
        self._watches.discard(watch)

    async def _run(self) -> None:
        try:
            while self._watches:
                await asyncio.sleep(STALL_TICK)
                now, stall = self._loop.time(), settings.LIVE_STALL_TIMEOUT_MS / 1000
                for watch in list(self._watches):
                    watch.check(now, stall)
        finally:
            self._task = None

    @classmethod
    async def stop_all(cls) -> None:
        for clock in list(cls._clocks.values()):
            if clock._loop is asyncio.get_running_loop():
                await cancel_and_wait(clock._task)


class _DaphneConnection:
    def __init__(self, protocol, kind: str, send) -> None:
        self.protocol = protocol
        self.kind = kind
        self.send_to_daphne = send
        self.gate = TransportGate()
        self.registered = False

    async def run(self, app, scope, receive):
        try:
            return await app(scope, receive, self.send)
        finally:
            self._unregister()

    def _consumer(self):
        # HTTP: the twisted.web Request (it forwards to its channel); WebSocket: the transport.
        return self.protocol if self.kind == "http" else getattr(self.protocol, "transport", None)

    def _register(self) -> None:
        consumer = self._consumer()
        try:
            consumer.registerProducer(self.gate, True)
            self.registered = True
        except Exception as exc:  # another producer is registered: go on without ours
            log.debug("flow control not available on this connection: %s", exc)

    def _unregister(self) -> None:
        if self.registered:
            self.registered = False
            try:
                self._consumer().unregisterProducer()
            except Exception:  # the connection is already gone
                pass

    def _abort(self) -> None:
        transport = getattr(self.protocol, "transport", None)
        if transport is not None:
            transport.abortConnection()

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind in ("http.response.start", "websocket.accept"):
            await self.send_to_daphne(message)
            self._register()
            return
        if kind == "http.response.body" and not message.get("more_body", False):
            self._unregister()  # the request ends: the next one on this connection may register
        if self.gate.lost:
            return  # the client is gone; the app hears of it from receive() soon
        if not self.gate.writable.is_set():
            size = _size(message)
            if self.gate.sent_while_paused + size > settings.LIVE_MAX_BUFFER_BYTES:
                try:
                    await asyncio.wait_for(self.gate.writable.wait(), settings.LIVE_STALL_TIMEOUT_MS / 1000)
                except TimeoutError:
                    log.info("cutting a client that read nothing for %d ms", settings.LIVE_STALL_TIMEOUT_MS)
                    self.gate.lost = True
                    self._abort()
                    return
                if self.gate.lost:
                    return
            else:
                self.gate.sent_while_paused += size
        await self.send_to_daphne(message)
