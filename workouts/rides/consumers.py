"""WebSocket ``ws/streams/{name}/metrics/``: a stream's live ride metrics for apps that speak
WebSocket (what the metrics SSE sends: workouts/rides/api.py)."""

from __future__ import annotations

from django.conf import settings

from streams.access import identity
from streams.engine.context import redis_context
from streams.live import capacity
from streams.live.consumers import LiveConsumer, end_close_code
from streams.live.follow import Follow, access_guard, follow_one, live_hub
from streams.store import services as store
from workouts.rides.tracking import Alert, MetricsBoard, Snapshot, metrics_updates


class MetricsConsumer(LiveConsumer):
    """``ws/streams/{name}/metrics/``: the stream's live ride metrics, what the metrics SSE
    sends, for apps that speak WebSocket. Server → client only:
    ``{"event": "metrics", "id": ..., "data": {...snapshot, "chart": [...]}}`` at most once a
    second while entries arrive (``?last_event_id=`` resumes after an id), ``{"event": "alert",
    "stream", "kind", "state", "ride_s"}`` as alerts are raised and cleared, then
    ``{"event": "deleted" | "forbidden" | "unavailable" | "shutdown" | "failed", "detail": ...}`` before the
    server closes (the entry socket's codes: 4403 forbidden, 1012 shutdown, 1011 failed, 1013
    unavailable, 1000 deleted). The read rule, the capacity limits and the
    refusals at connect are the entry socket's; a frame from the client gets an error frame."""

    async def admit(self, query: dict[str, str]):
        name = self.scope["url_route"]["kwargs"]["name"]
        ident = await identity.identify_scope(self.scope, query.get("token"))
        follow = await follow_one(name, resume=query.get("last_event_id"), mode="start")
        await store.check_readable(ident, [name])
        follow.guard = access_guard(ident, follow.names)
        ctx = await redis_context()
        client = (self.scope.get("client") or (None,))[0]
        self.admission = capacity.admit_follow(hub=live_hub(ctx), ident=ident, client_address=client, names=follow.names)
        return self._forward(MetricsBoard.of(ctx), follow)

    async def _forward(self, board, follow: Follow) -> None:
        # No Redis call here: the tracker reads the stream, and an access re-check that cannot
        # reach Redis is postponed (streams/live/follow.py access_guard).
        heartbeat = settings.SSE_HEARTBEAT_INTERVAL / 1000
        async for updates in metrics_updates(board, follow, heartbeat=heartbeat):
            for update in updates:
                if isinstance(update, Snapshot):
                    await self.send_json({"event": "metrics", "id": update.id, "data": update.data})
                elif isinstance(update, Alert):
                    await self.send_json({"event": "alert", **update.data})
                else:
                    await self.send_json({"event": update.ended.reason, **update.payload(multi=False)})
                    await self.close(code=end_close_code(update.ended.reason))
                    return

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        await self.send_json({"error": "this socket only sends: publish on ws/streams/{name}/ or the REST API"})

