"""Two ASGI wrappers in front of Django, for what must happen before Django reads a request.

``BodyLimit`` reads an HTTP request body itself, counting the bytes actually received, and
answers 413 as soon as they pass the path's limit: Django's ASGI handler would otherwise read
a chunked body of any size into a temporary file before any middleware or view could object.

``TrustedProxies`` applies ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only when the peer is
in TRUSTED_PROXIES (default: none), and strips them otherwise, so no client can claim an
internal address (``/metrics``) or HTTPS (SECURE_PROXY_SSL_HEADER) by sending a header.
A request that came with forwarded headers from a peer not trusted is marked
(``scope[UNTRUSTED_FORWARD]``): it passed through a proxy whose client we cannot know, so its
peer address (the proxy's, often private) must not open ``/metrics`` (monitoring/views.py).
"""

from __future__ import annotations

import ipaddress
import json

from django.conf import settings

from streamsite.server.limits import body_limit, too_big

UNTRUSTED_FORWARD = "streamsite.untrusted_forward"  # read by monitoring/views.py (by this name)


async def send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"), (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, _ = body_limit(scope["path"])
        too_big_answer = {"detail": too_big(scope["path"])}
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_json(send, 400, {"detail": "invalid Content-Length header"})
            if int(declared) > limit:
                return await send_json(send, 413, too_big_answer)
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > limit:
                return await send_json(send, 413, too_big_answer)  # stop reading here
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)


class TrustedProxies:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        forwarded = [h for h in headers if h[0] in (b"x-forwarded-for", b"x-forwarded-proto")]
        if not forwarded:
            return await self.app(scope, receive, send)
        scope = dict(scope)
        scope["headers"] = [h for h in headers if h[0] not in (b"x-forwarded-for", b"x-forwarded-proto")]
        peer = (scope.get("client") or ("",))[0]
        if self._trusted(peer):
            scope = self._apply(scope, dict(forwarded))
        else:
            scope[UNTRUSTED_FORWARD] = True
        return await self.app(scope, receive, send)

    @staticmethod
    def _trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in settings.TRUSTED_PROXIES)

    def _apply(self, scope: dict, forwarded: dict) -> dict:
        chain = [a.strip() for a in forwarded.get(b"x-forwarded-for", b"").decode("latin-1").split(",") if a.strip()]
        # The client is the right-most address that is not one of our proxies.
        for address in reversed(chain):
            if not self._trusted(address):
                port = (scope.get("client") or (None, 0))[1]
                scope["client"] = (address, port)
                break
        proto = forwarded.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
        if proto in ("http", "https"):
            scope["scheme"] = proto if scope["type"] == "http" else ("wss" if proto == "https" else "ws")
            # Django reads SECURE_PROXY_SSL_HEADER from the headers: keep it for trusted peers.
            scope["headers"] = [*scope["headers"], (b"x-forwarded-proto", proto.encode())]
        return scope
