"""Hot routes served at the ASGI edge: the lean stack and the view, without Django's
per-request handler.

Django's ``ASGIHandler`` costs each request a ``ThreadSensitiveContext`` (an executor thread
started and shut down), the ``request_started`` / ``request_finished`` signals, a
disconnect-listening task and ``sync_to_async(response.close)``: thread hops that set the floor
of a short request (~500-600 requests/s per process here, docs/benchmarks.md (w)) and of a new
live listener (~420-650 accepts/s, (v)). ``DirectRoutes`` serves the routes of
``DIRECT_ROUTES`` (a device's single-entry publish, and the two SSE follows) by calling the lean
handler's own ``create_request`` and ``get_response_async`` — the same ``LEAN_MIDDLEWARE``
(Prometheus counters, ALLOWED_HOSTS, security headers, body cap, error answers), the same URL
resolution and the same ninja view, auth (``Caller``), validation, access check and service —
and sending the response itself.

A follow's view hands its live body off (streams/core/handoff.py): the request's scope carries
a ``Handoff`` slot, as under the lean handler, the response's start is sent as the lean handler
sends it, and then the slot's ``finish`` pumps the body exactly as ``LeanASGIHandler`` does
(the disconnect watch, the stall watch of ``FlowControl`` around ``send``, the body's
``aclose`` giving back the admission place and the hub subscription). A failure or a
cancellation before the start went out closes the body unsent, as there.

What is left out, and why that is safe for these routes: the signals' receivers close the
request thread's database connections, and there is no request thread (a token or session the
identity cache does not know, and a coach's shares, are loaded through
``database_sync_to_async``, which closes its own); the view is not cancelled by a disconnect
while it runs (a follow's view is a few Redis reads: a client gone by then is seen by the body's
disconnect watch, which ends it at once, its start unread); ``response.close()`` runs on the
event loop (an ``HttpResponse`` closes only its in-memory body and the request's). A request
the lean handler could not build (``create_request``'s 400) or a path under a ``root_path`` goes
to the full handler (``app``), so the answer is Django's. A streamed response that is not
handed off is a bug here (Django's body pump is not run).
"""

from __future__ import annotations

import re
from io import BytesIO

from django.core.handlers.asgi import get_script_prefix
from django.urls import set_script_prefix

from streams.core.handoff import HANDOFF
from streamsite.server.flow_control import ClientStalled
from streamsite.server.handlers import Handoff, LeanASGIHandler

# Method and path of each direct route (the URLconf still resolves them: the view is Django's).
DIRECT_ROUTES = (
    ("POST", re.compile(r"/api/streams/[^/]+/events\Z")),  # a device's publish
    ("GET", re.compile(r"/api/streams/[^/]+/sse\Z")),  # follow one stream (SSE)
    ("GET", re.compile(r"/api/sse\Z")),  # follow several streams (SSE)
)


def is_direct(scope: dict) -> bool:
    if scope.get("root_path"):
        return False
    method, path = scope["method"], scope["path"]
    return any(method == m and pattern.match(path) for m, pattern in DIRECT_ROUTES)


class RequestBody:
    """The body read to its end (``BodyLimit`` before us bounds it), kept for a replay."""

    __slots__ = ("messages", "data")

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.data = b""

    async def read(self, receive) -> bool:
        """True when the body is complete; False when the client went first."""
        parts = []
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] != "http.request":
                return False
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.data = b"".join(parts)
                return True

    def replay(self, receive):
        messages = list(self.messages)

        async def replayed():
            return messages.pop(0) if messages else await receive()

        return replayed


class DirectRoutes:
    """An ASGI app: ``DIRECT_ROUTES`` through ``handler``'s middleware and view (above), every
    other request to ``app``."""

    def __init__(self, app, *, handler: LeanASGIHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not is_direct(scope):
            return await self.app(scope, receive, send)
        body = RequestBody()
        if not await body.read(receive):
            return  # gone before its body came: nothing to answer
        slot = Handoff()  # a follow view hands its live body off into it (streams/core/handoff.py)
        try:
            answered = await self._answer(scope, body.data, slot, send)
        except BaseException:
            slot.started = False  # cancelled or failed before the body was ours: close it, send nothing
            await slot.finish(receive, send)
            raise
        if not answered:  # Django's own 400 (a request it cannot build): let it answer
            return await self.app(scope, body.replay(receive), send)
        del body  # the request's bytes are not kept while a live body streams
        await slot.finish(receive, send)  # a handed-off body: pumped as the lean handler does

    async def _answer(self, scope: dict, data: bytes, slot: Handoff, send) -> bool:
        """Answer through the lean handler's middleware and view; False when Django cannot build
        the request. Its request and response end with this call: a handed-off body keeps neither."""
        request, _ = self.handler.create_request({**scope, HANDOFF: slot}, BytesIO(data))
        if request is None:
            return False
        set_script_prefix(get_script_prefix(scope))
        response = await self.handler.get_response_async(request)
        try:
            if response.streaming and getattr(response, "handoff", None) is None:
                raise RuntimeError(f"a direct route answered a streamed response: {request.path}")
            try:
                # A handed-off response: only its start (LeanASGIHandler.send_response).
                await self.handler.send_response(response, send)
            except ClientStalled:
                pass  # the client read nothing: as Django's handler, a cancelled send ends the answer
        finally:
            response.close()
        return True
