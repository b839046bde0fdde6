"""The HTTP edge: uvicorn's httptools protocol with limits it lacks.

uvicorn 0.54 with httptools bounds nothing of a request's head: a 100 MB header is read into
memory and answered, and a connection that sends half a request (or nothing) is held forever
(slowloris). Its one timeout is keep-alive, armed only after a response. The production command
(Dockerfile, ``./dev.sh serve``) runs this class instead:

    uvicorn --http streamsite.server.http:BoundedHttpToolsProtocol ...

- the request target (URL) at most ``HTTP_MAX_REQUEST_LINE`` bytes: 414;
- the whole head (request line and header fields) at most ``HTTP_MAX_HEADER_BYTES``, and at
  most ``HTTP_MAX_HEADERS`` header fields: 431 — counted as the bytes arrive, so an unfinished
  head is cut too (it holds at most the limit plus one read of the socket);
- a head not complete within ``HTTP_HEADER_TIMEOUT`` of its first byte (of the connection, for
  the first request): 408;
- a request body that stops arriving for ``HTTP_BODY_TIMEOUT``: 408 (or, once the response has
  started, the connection is closed);
- an idle keep-alive connection is closed after ``HTTP_KEEP_ALIVE_TIMEOUT`` (uvicorn's own
  timer, given our setting).

And one limit of the process, not the request: once half of the descriptors kept in reserve
(``FD_RESERVE``, streams/core/descriptors.py) are taken, a request other than ``/health/`` and
``/metrics`` is answered 503 here, with ``Retry-After`` and ``Connection: close``, before Django sees it; the
probes and the scraper answer from the reserve left.

Each answer is JSON ``{"detail": ...}`` naming the limit, with ``Connection: close``, and the
connection is closed. Nothing changes once the head is read: an SSE response runs as long as it
likes, a WebSocket upgrade hands the socket to uvicorn's WebSocket protocol. What this class
relies on in uvicorn is listed at ``streams.core.compat.uvicorn_httptools_protocol``.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass

from streams.core import compat
from streams.core.descriptors import RETRY_AFTER_S, Tally, descriptors
from streams.core.instruments import DESCRIPTOR_REFUSALS

# The phases of a connection as seen here: reading a request's head, reading its body, or
# neither (a response is being produced, or the connection waits for the next request,
# which uvicorn's keep-alive timer bounds).
HEAD, BODY, IDLE = "head", "body", "idle"


@dataclass(frozen=True)
class EdgeLimits:
    max_request_line: int
    max_header_bytes: int
    max_headers: int
    header_timeout: float  # seconds
    body_timeout: float
    keep_alive_timeout: float


@functools.cache
def edge_limits() -> EdgeLimits:
    """The limits from settings, read once per process (at its first connection: the ASGI
    application, and with it Django's settings, is loaded before any connection is made)."""
    from django.conf import settings

    return EdgeLimits(
        max_request_line=settings.HTTP_MAX_REQUEST_LINE,
        max_header_bytes=settings.HTTP_MAX_HEADER_BYTES,
        max_headers=settings.HTTP_MAX_HEADERS,
        header_timeout=settings.HTTP_HEADER_TIMEOUT_MS / 1000,
        body_timeout=settings.HTTP_BODY_TIMEOUT_MS / 1000,
        keep_alive_timeout=settings.HTTP_KEEP_ALIVE_TIMEOUT_MS / 1000,
    )


# Answered from the descriptor reserve: the load balancer's probes and the scraper.
RESERVE_PATHS = (b"/health/", b"/metrics")
_OUT_OF_DESCRIPTORS = json.dumps({"detail": "this server is at its limit of open connections (file descriptors, "
                                            "FD_RESERVE): try again later"}).encode()
_edge_tally = Tally()
log = logging.getLogger(__name__)


async def refuse_out_of_descriptors(scope, receive, send) -> None:
    """The ASGI application of a request refused for want of descriptors: 503, and the
    connection closed so its descriptor comes back."""
    DESCRIPTOR_REFUSALS.labels(where="edge").inc()
    _edge_tally.note(log, "requests refused at the edge: the process is past half of its descriptor reserve")
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(_OUT_OF_DESCRIPTORS)),
        (b"retry-after", b"%d" % RETRY_AFTER_S), (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": _OUT_OF_DESCRIPTORS})


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the answer is in ``protocol._refusal``."""


_PHRASES = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(compat.uvicorn_httptools_protocol()):
    # Slots, not the instance dict: ten more keys in it would grow every connection by ~1.3 KB
    # (the dict leaves its shared-key form), an idle SSE listener's whole cost being ~25 KB.
    __slots__ = ("_limits", "_phase", "_deadline", "_body_seen", "_timer", "_head_bytes", "_head_size",
                 "_headers", "_heads_done", "_refusal")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits = edge_limits()
        self.timeout_keep_alive = limits.keep_alive_timeout
        self._phase = HEAD
        self._deadline = 0.0  # HEAD: when the head must be complete
        self._body_seen = 0.0  # BODY: when body bytes last arrived
        self._timer = None
        self._head_bytes = 0  # raw bytes of reads that fell wholly inside the current head
        self._head_size = 0  # the parsed head so far: URL and header fields
        self._headers = 0
        self._heads_done = 0
        self._refusal: tuple[int, str] | None = None

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        descriptors().opened.let_in()  # counted now: an idle connection holds one too
        self._start_head()

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        inside_head = self._phase == HEAD
        heads_done = self._heads_done
        super().data_received(data)
        if self._refusal is not None or self.transport.is_closing():
            return
        if self._phase == HEAD:
            # Only a read that began and ended inside one head is counted whole: one that also
            # held the end of a body or of an earlier head is left out (at most one read).
            if inside_head and heads_done == self._heads_done:
                self._head_bytes += len(data)
                if self._head_bytes > self._limits.max_header_bytes:
                    self._refuse(*self._too_large())
        elif self._phase == BODY:
            self._body_seen = self.loop.time()
            self._ensure_timer(self._body_seen + self._limits.body_timeout)
        elif self.cycle is None or self.cycle.response_complete:
            # Bytes after a response that began no request (blank lines): uvicorn's keep-alive
            # timer is off until the next response, so the head timer takes over.
            self._start_head()

    # --- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != HEAD:
            self._start_head()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._limits.max_request_line:
            self._refusal = (414, f"request target is longer than the limit of {self._limits.max_request_line} "
                                  "bytes (HTTP_MAX_REQUEST_LINE)")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._head_size += len(name) + len(value) + 4
        if self._headers > self._limits.max_headers:
            self._refusal = (431, f"more than {self._limits.max_headers} header fields (HTTP_MAX_HEADERS)")
            raise _Refused
        if len(self.url) + self._head_size > self._limits.max_header_bytes:
            self._refusal = self._too_large()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._heads_done += 1
        self._head_bytes = self._head_size = self._headers = 0
        self._phase = BODY
        self._body_seen = self.loop.time()
        if self.url.startswith(RESERVE_PATHS) or descriptors().request_fits():
            super().on_headers_complete()
            return
        # uvicorn's own way to refuse a request (its limit_concurrency): the cycle runs another
        # application; the body, keep-alive and pipelining are handled as for any request.
        app, self.app = self.app, refuse_out_of_descriptors
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._phase = IDLE
        super().on_message_complete()

    # --- answers ------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers a parser error with this; a callback of ours that stopped the parser
        has its own answer."""
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._answer(*self._refusal)

    def _too_large(self) -> tuple[int, str]:
        return 431, f"request headers are larger than the limit of {self._limits.max_header_bytes} bytes " \
                    "(HTTP_MAX_HEADER_BYTES)"

    def _refuse(self, status: int, detail: str) -> None:
        self._refusal = (status, detail)
        self._answer(status, detail)

    def _answer(self, status: int, detail: str) -> None:
        """Answer ``status`` and close, unless a response is under way on this connection (an
        answer now would land inside it): then only close."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or (self._phase == BODY and not self.cycle.response_started):
            body = json.dumps({"detail": detail}).encode()
            head = [b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES[status])]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + body)
        self.logger.info("%s - %d: %s", "%s:%s" % self.client if self.client else "-", status, detail)
        self.transport.close()

    # --- timers -------------------------------------------------------------------------------

    def _start_head(self) -> None:
        self._phase = HEAD
        self._deadline = self.loop.time() + self._limits.header_timeout
        self._ensure_timer(self._deadline)

    def _ensure_timer(self, when: float) -> None:
        """A timer that fires at ``when`` or earlier (it re-checks when it fires): one timer per
        connection, re-armed only when it would fire too late."""
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed, or handed to the WebSocket protocol
        now = self.loop.time()
        if self._phase == HEAD:
            if now >= self._deadline:
                self._refuse(408, f"request headers not complete within {self._limits.header_timeout:g} s "
                                  "(HTTP_HEADER_TIMEOUT)")
            else:
                self._ensure_timer(self._deadline)
        elif self._phase == BODY:
            if self.flow.read_paused:
                self._body_seen = now  # the application has not taken what came: not the client's stall
            due = self._body_seen + self._limits.body_timeout
            if now >= due:
                self._refuse(408, f"request body stalled for {self._limits.body_timeout:g} s (HTTP_BODY_TIMEOUT)")
            else:
                self._ensure_timer(due)
