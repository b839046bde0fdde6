"""WebSocket: ``ws/streams/{name}/`` follows a stream and, with a token, publishes to it.

Server → client: ``{"id": ..., "data": {...}}`` per entry (same hub and the same start rules
as SSE: ``?last_event_id=`` / ``?from=start``), ``{"event": "overflow" | "deleted" |
"shutdown", ...}`` before the server closes, ``{"ids": [...]}`` after a publish, and
``{"error": "..."}`` for a bad frame (the socket stays open).

Client → server: a JSON object or an array of objects, published like
``POST /api/streams/{name}/events``; needs a valid API token (``?token=`` or an
``Authorization: Bearer`` header) or a staff session.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams import operations
from streams.auth import user_for_token
from streams.live import Ended, Follow, follow_one, live_batches
from streams.names import InvalidInput, encode_entries
from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CLOSE_POLICY = 4403  # not allowed to read
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAVAILABLE = 1013  # try again later


class StreamConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        query = {k: v[-1] for k, v in parse_qs(self.scope.get("query_string", b"").decode()).items()}
        self.name = self.scope["url_route"]["kwargs"]["name"]
        self.writer = await self._writer(query)
        self.forward: asyncio.Task | None = None
        if not settings.STREAMS_PUBLIC_READ and self.writer is None:
            await self.close(code=CLOSE_POLICY)
            return
        try:
            follow = await follow_one(self.name, resume=query.get("last_event_id"), mode=query.get("from"))
        except InvalidInput as exc:
            await self.accept()
            await self.send_json({"error": str(exc)})
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        except (RedisConnectionError, RedisTimeoutError):
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        await self.accept()
        self.forward = asyncio.get_running_loop().create_task(self._forward(follow))

    async def disconnect(self, code):
        await cancel_and_wait(getattr(self, "forward", None))

    async def _writer(self, query: dict[str, str]):
        headers = dict(self.scope.get("headers", []))
        raw = query.get("token")
        scheme, _, value = headers.get(b"authorization", b"").decode().partition(" ")
        if not raw and scheme.lower() == "bearer":
            raw = value.strip()
        if raw:
            return await user_for_token(raw)
        user = self.scope.get("user")
        if user is not None and user.is_authenticated and user.is_staff:
            return user
        return None

    async def _forward(self, follow: Follow) -> None:
        try:
            async for item in live_batches(follow, heartbeat=settings.SSE_HEARTBEAT_INTERVAL / 1000):
                if isinstance(item, Ended):
                    await self.send_json({"event": item.reason, "detail": item.detail, "last_event_id": follow.resume_id()})
                    await self.close()
                    return
                for entry in item:
                    follow.positions[entry.name] = entry.id
                    await self.send(text_data=f'{{"id": "{entry.id}", "data": {entry.data_json}}}')
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("websocket feed for %s lost Redis: %s", self.name, exc)
            await self.close(code=CLOSE_UNAVAILABLE)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Parse ourselves so a malformed frame gets an error frame instead of a dropped socket.
        if self.writer is None:
            await self.send_json({"error": "publishing needs a valid API token (?token= or Authorization: Bearer)"})
            return
        try:
            payload = json.loads(text_data if text_data is not None else bytes_data)
            entries = encode_entries(payload)
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            await self.send_json({"error": f"bad frame: {exc}"})
            return
        try:
            ids = await operations.stream_publish(name=self.name, entries=entries)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            await self.send_json({"error": f"redis unavailable: {exc}"})
            return
        await self.send_json({"ids": ids})
