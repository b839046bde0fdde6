"""WebSocket: ``ws/streams/{name}/`` follows a stream and, with a token, publishes to it
(the live ride metrics' socket, ``ws/streams/{name}/metrics/``, builds on ``LiveConsumer``:
workouts/rides/consumers.py).

Server → client: ``{"id": ..., "data": {...}}`` per entry (same hub and the same start rules
as SSE: ``?last_event_id=`` / ``?from=start``), ``{"event": "overflow" | "deleted" |
"shutdown" | "forbidden" | "unavailable", ...}`` before the server closes, ``{"ids": [...]}`` after a publish, and
``{"error": "..."}`` for a bad frame or a refused publish (the socket stays open; ``"final":
true`` when sending it again cannot succeed until the user acts — another stream or token, a
smaller frame, a stream deleted under the quota, a reload for a new CSRF token — or never, an
ended ride; ``retry_after`` when waiting is enough); with
``PUBLISH_DURABILITY=replicated``, a publish no replica confirmed in time gets
``{"error": "not replicated within N ms…", "ids": [...]}`` (the ids written).

``?rate=N``: at most N entry frames per second, each the newest entry of its interval, with
``"conflated": n`` (how many entries it stands for) beside ``id`` and ``data``
(streams/live/conflation.py). ``?batch=1``: one frame per wake-up carrying every entry ready
for the socket, in order, as a JSON array of those objects (``[{"id", "data"}, ...]``); event,
ack and error frames stay single objects. A resume (``?last_event_id=``) that cannot go on where
the client stands gets ``{"event": "reset", "stream", "requested", "first_id", "reason",
"detail"}`` before the entries from the stream's oldest one (the socket stays open).

Close codes say whether to resume with ``?last_event_id=<the last id received>``: 1000 after
``deleted`` and 4xxx are final; 1012 after ``shutdown``, 1013 after ``overflow`` or when Redis
fails under the feed (a restart, a failover), 1011 when anything else fails, and an abrupt
close (1006: the process died) all mean "resume" (tests/streams/test_websocket_chaos.py).

Client → server: a JSON object or an array of objects, published like
``POST /api/streams/{name}/events``; needs a valid API token or a session, with the rights of
REST publish and its rate (``PUBLISH_RATE_PER_TOKEN``: an error frame with ``retry_after``),
and a frame no larger than a REST body (``STREAMS_MAX_BODY``: an error frame naming it; the
server closes a much larger one with 1009, uvicorn's ``--ws-max-size``). The token: the
``Sec-WebSocket-Protocol`` carrier (``new WebSocket(url, ["streamsite.token", token])``, answered
with the ``streamsite.token`` subprotocol), an ``Authorization: Bearer`` header, or ``?token=``
(redacted from the server's log). A session socket publishes only with the CSRF proof a REST
write needs: ``?csrf=<the csrftoken cookie's value or the page's CSRF token>`` at connect,
checked by Django's CSRF middleware against the session's CSRF cookie and the Origin; without
it a publish gets an error frame. The caller's identity (and session) is re-checked (cached,
AUTH_CACHE_TTL) on every frame: a revoked token, user or session gets an error frame and the
socket closes with 4401.

Refusals at connect: the socket is accepted, one ``{"error": ...}`` frame is sent, then it
closes with 4401 (bad token), 4403 (missing scope), 4404 (stream not found or not readable),
4429 / 4503 (a capacity limit: streams/live/capacity.py; a publish-only socket takes a place in
LIVE_MAX_CONNECTIONS_PER_USER too) or 4400 (bad parameters). A follow whose access is revoked
later (a token, share or user, or its session: logout, a password change, expiry) gets
``{"event": "forbidden", ...}`` and closes with 4403; one whose caller the database cannot
confirm past AUTH_OUTAGE_GRACE gets ``{"event": "unavailable", ...}`` and closes with 1013 (a
database down at connect, for a credential the cache does not know: an error frame, then 1013).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from streams.access import identity, rules
from streams.access.identity import AccessError
from streams.core.aio import cancel_and_wait
from streams.core.compat import consumer_send, dispatch_without_db_close
from streams.core.errors import InvalidInput
from streams.engine.context import redis_context
from streams.live import capacity
from streams.live.conflation import parse_rate
from streams.live.follow import (
    Ended,
    Follow,
    Reset,
    access_guard,
    follow_one,
    live_batches,
    live_hub,
)
from streams.live.hub import Entry
from streams.store import services as store
from streams.store.names import encode_entries, parse_json, validate_stream_name

log = logging.getLogger(__name__)

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NORMAL = 1000  # after {"event": "deleted"}: the end, do not resume
CLOSE_INTERNAL_ERROR = 1011  # the server failed: resume after a backoff
CLOSE_SERVICE_RESTART = 1012  # after {"event": "shutdown"}: resume (another process answers)
CLOSE_UNAVAILABLE = 1013  # try again later: Redis unreachable, or the listener overflowed
# Refusals at connect that a reconnect cannot mend (their error frame says "final"); 4429, a
# per-user limit, can clear by itself.
FINAL_CLOSES = frozenset({CLOSE_BAD_REQUEST, CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, 4404})

# The close after an ``Ended`` event. Every code but 1000 and 4xxx means "resume with
# ?last_event_id=": clients decide from the code alone (docs/api.md).
END_CLOSE_CODES = {
    "forbidden": CLOSE_FORBIDDEN, "shutdown": CLOSE_SERVICE_RESTART, "overflow": CLOSE_UNAVAILABLE,
    "unavailable": CLOSE_UNAVAILABLE,  # the database is gone past AUTH_OUTAGE_GRACE
}


def end_close_code(reason: str) -> int:
    """The close code that follows an ``{"event": reason}`` frame (``failed``: 1011)."""
    return END_CLOSE_CODES.get(reason, CLOSE_INTERNAL_ERROR if reason == "failed" else CLOSE_NORMAL)


def parse_batch(value: str | None) -> bool:
    """``?batch=``: ``1``/``true`` for one frame per wake-up (a JSON array of entries)."""
    if value in (None, "", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise InvalidInput(f"invalid batch={value!r}: use batch=1 for one frame per wake-up, or omit it")


def entry_frame(entry: Entry) -> str:
    return f'{{"id": "{entry.id}", "data": {entry.data_json}}}'


def conflated_frame(entry: Entry) -> str:
    return f'{{"id": "{entry.id}", "data": {entry.data_json}, "conflated": {getattr(entry, "count", 1)}}}'


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """What both sockets share: no channel layer, no per-frame DB close, the refusal at
    connect, and the forward task (``self.forward``) and capacity place (``self.admission``)
    that a disconnect gives back."""

    # No channel-layer channel per connection: live entries and deletions reach this consumer
    # through the process's hub (streams/live/hub.py, streams/live/deletions.py). With one, every socket
    # held a channels_redis receive, whose cancellation at disconnect could hang for good —
    # and uvicorn's shutdown waits for it. No layer is configured at all now (settings); the
    # alias keeps it so should one be configured for other code.
    channel_layer_alias = "streamsite.websocket-has-no-channel-layer"

    async def dispatch(self, message):
        # No database work here except through database_sync_to_async (identity loads), so
        # Channels' per-frame close of stale DB connections (a thread hop) is skipped.
        await dispatch_without_db_close(self, message)

    async def accept(self, subprotocol=None, headers=None):
        """Accepted with the ``streamsite.token`` subprotocol when the client offered it (a
        browser fails a handshake that does not answer one of its subprotocols)."""
        if subprotocol is None and identity.TOKEN_SUBPROTOCOL in (self.scope.get("subprotocols") or ()):
            subprotocol = identity.TOKEN_SUBPROTOCOL
        await super().accept(subprotocol, headers)

    async def _refuse(self, detail: str, code: int) -> None:
        """Accepted, one ``{"error": ...}`` frame, closed with ``code``: a browser's WebSocket
        sees neither a refused handshake's reason nor its status. ``"final": true`` for the
        codes a reconnect cannot mend (``FINAL_CLOSES``)."""
        await self.accept()
        await self.send_json({"error": detail, "final": True} if code in FINAL_CLOSES else {"error": detail})
        await self.close(code=code)

    async def connect(self):
        """``admit(query)``, then accept and start ``self.forward`` if it returned a coroutine;
        a refusal raised by ``admit`` is answered here (``_refuse``; 1013 without Redis)."""
        query = {k: v[-1] for k, v in parse_qs(self.scope.get("query_string", b"").decode()).items()}
        self.forward: asyncio.Task | None = None
        self.admission = None
        try:
            forward = await self.admit(query)
        except AccessError as exc:  # a 503 (no descriptors, no database, the process's cap) is "try again"
            await self._refuse(exc.detail, CLOSE_UNAVAILABLE if exc.status == 503 else 4000 + exc.status)
            return
        except InvalidInput as exc:
            await self._refuse(str(exc), CLOSE_BAD_REQUEST)
            return
        except RedisError:
            await self._refuse("redis unavailable: try again later", CLOSE_UNAVAILABLE)
            return
        await self.accept()
        if forward is not None:
            self.forward = asyncio.get_running_loop().create_task(self._closing_on_failure(forward))

    async def _closing_on_failure(self, forward) -> None:
        """Runs the forward; a failure closes the socket with a code that says "resume": 1013
        for any Redis error (a restart, a failover's CLUSTERDOWN), 1011 for anything else. A
        socket left open with a dead forward would look alive and deliver nothing."""
        try:
            await forward
        except RedisError as exc:
            log.warning("websocket feed of %s lost Redis: %s", self.scope.get("path"), exc)
            await self.close(code=CLOSE_UNAVAILABLE)
        except Exception:
            log.exception("websocket feed of %s failed", self.scope.get("path"))
            await self.close(code=CLOSE_INTERNAL_ERROR)

    async def admit(self, query: dict[str, str]):
        """Who calls and what they may do; takes ``self.admission``. Returns the coroutine
        that forwards to the client, or None. Raises AccessError / InvalidInput to refuse."""
        raise NotImplementedError

    async def disconnect(self, code):
        await cancel_and_wait(getattr(self, "forward", None))
        if getattr(self, "admission", None) is not None:
            self.admission.release()


class StreamConsumer(LiveConsumer):

    async def admit(self, query: dict[str, str]):
        self.name = self.scope["url_route"]["kwargs"]["name"]
        self.identity = await identity.identify_scope(self.scope, query.get("token"))
        # A session rides on a cookie the browser sends by itself: publishing needs the
        # CSRF proof of a REST write (a token-authenticated device needs none).
        self.csrf_proven = self.identity.via != "session" or identity.websocket_csrf_passes(
            self.scope, query.get("csrf")
        )
        readable, writable = await self._access()
        if not readable and not writable:
            raise AccessError(404, f"stream {self.name!r} not found")
        client = (self.scope.get("client") or (None,))[0]
        if not readable:  # publish-only (a device): a connection all the same
            self.admission = capacity.connections.admit(
                capacity.caller_key(self.identity, client), settings.LIVE_MAX_CONNECTIONS_PER_USER
            )
            return None
        rate, batched = parse_rate(query.get("rate")), parse_batch(query.get("batch"))
        follow = await follow_one(self.name, resume=query.get("last_event_id"), mode=query.get("from"))
        follow.rate = rate
        follow.guard = access_guard(self.identity, follow.names)
        hub = live_hub(await redis_context())
        self.admission = capacity.admit_follow(hub=hub, ident=self.identity, client_address=client, names=follow.names)
        return self._forward(follow, batched=batched)

    async def _access(self) -> tuple[bool, bool]:
        """(may follow, may publish). A publish-only token (a device) connects to publish."""
        validate_stream_name(self.name)
        ident = self.identity
        meta = (await store.stream_meta(names=[self.name]))[self.name]
        readable = rules.may_read(ident, meta)
        unclaimed = meta.owner_id is None and not (await store.streams_exist(names=[self.name]))[self.name]
        writable = ident.authenticated and "publish" in ident.scopes and (
            unclaimed or rules.can_manage_stream(ident, owner_id=meta.owner_id)
        )
        return readable, writable


    async def _forward(self, follow: Follow, *, batched: bool = False) -> None:
        send = consumer_send(self)  # the connection's ASGI send: two wrappers fewer per frame
        frame = conflated_frame if follow.rate is not None else entry_frame
        async for item in live_batches(follow, heartbeat=settings.SSE_HEARTBEAT_INTERVAL / 1000):
            if isinstance(item, Ended):
                await self.send_json({"event": item.reason, "detail": item.detail, "last_event_id": follow.resume_id()})
                await self.close(code=end_close_code(item.reason))
                return
            if isinstance(item, Reset):
                await self.send_json({"event": "reset", "stream": item.name, "requested": item.requested,
                                      "first_id": item.first_id, "reason": item.reason, "detail": item.detail})
                continue
            if batched and item:
                follow.positions[follow.names[0]] = item[-1].id
                await send({"type": "websocket.send", "text": "[" + ",".join(frame(e) for e in item) + "]"})
            for entry in () if batched else item:
                follow.positions[entry.name] = entry.id
                await send({"type": "websocket.send", "text": frame(entry)})
            item = entry = None  # nothing kept while the next batch is awaited

    async def refuse_publish(self, detail: str) -> None:
        """An error frame for a publish that sending again cannot mend until the user acts
        (``final``: the wrong stream, token or frame); the socket stays open."""
        await self.send_json({"error": detail, "final": True})

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Parse ourselves so a malformed frame gets an error frame instead of a dropped socket.
        try:
            current = await identity.still_valid(self.identity)
        except identity.IdentityUnavailable as exc:
            await self.send_json({"error": exc.detail, "retry_after": exc.retry_after})
            return
        if current is None:
            await self.send_json({"error": "the API token or user behind this connection is no longer valid", "final": True})
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not current.authenticated:
            await self.refuse_publish("publishing needs a valid API token (?token= or Authorization: Bearer)")
            return
        if "publish" not in current.scopes:
            await self.refuse_publish("this API token lacks the 'publish' scope")
            return
        if not self.csrf_proven:
            await self.refuse_publish(
                "publishing over a session needs the CSRF token: connect with ?csrf=<CSRF token> "
                "(as X-CSRFToken for REST), or use an API token"
            )
            return
        limit = settings.STREAMS_MAX_BODY
        size = len(bytes_data) if text_data is None else (
            len(text_data) if len(text_data) * 4 <= limit else len(text_data.encode())
        )
        if size > limit:
            await self.refuse_publish(f"frame of {size} bytes is larger than the limit of {limit} bytes (STREAMS_MAX_BODY)")
            return
        try:
            entries = encode_entries(parse_json(text_data if text_data is not None else bytes_data, what="frame"))
        except InvalidInput as exc:
            await self.refuse_publish(f"bad frame: {exc}")
            return
        try:
            capacity.check_publish_rate(current, len(entries))
        except AccessError as exc:
            await self.send_json({"error": exc.detail, "retry_after": getattr(exc, "retry_after", None)})
            return
        try:
            ids = await store.stream_publish(name=self.name, entries=entries, actor=rules.actor_of(current))
        except store.WriteRefused:
            await self.refuse_publish(f"only the owner of stream {self.name!r} or a stream manager may publish to it")
            return
        except AccessError as exc:  # a quota (STREAMS_MAX_PER_USER on a first publish)
            await self.refuse_publish(exc.detail)
            return
        except store.StorageFull as exc:
            await self.send_json({"error": str(exc)})
            return
        except store.StreamEnded as exc:  # the ride ended: nothing more is written (REST: 409)
            await self.send_json({"error": exc.detail, "state": "ended", "final": True})
            return
        except store.PublishNotReplicated as exc:  # written, but no replica confirmed it in time
            await self.send_json({"error": exc.detail, "ids": exc.ids})
            return
        except RedisError as exc:  # unreachable, or a cluster mid-failover (CLUSTERDOWN)
            log.warning("websocket publish to %s lost Redis: %s", self.name, exc)
            await self.send_json({"error": "redis unavailable: try again later"})  # no address to clients
            return
        await self.send_json({"ids": ids})
