"""Stream deletions, told to every process's hub through a Redis stream of our own.

Each process has its own StreamHub, so a deletion made in one process must reach listeners in
all of them. The store's delete (``announce_deleted``, streams/store/services.py) ends this
context's listeners at once and appends the names to ``<prefix>{_events}`` (``KeyLayout.events``,
streams/store/keys.py). Every context's ``DeletionFeed`` follows that stream with one blocking
read on a connection of its own, from the stream's last id when it starts, and resumes from the
last id it saw after a connection error: a notice published meanwhile is not lost. It skips its
own notices (the listeners were ended at once). The same Redis the service already uses, no
channel layer: a Redis Cluster keeps the stream in one slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.core.aio import cancel_and_wait, raise_if_cancelled
from streams.engine.nodes import is_redirect
from streams.engine.pool import BlockingReadPool
from streams.live.hub import StreamHub
from streams.store.keys import key_layout
from streams.store.positions import last_generated_id

log = logging.getLogger(__name__)

BLOCK_MS = 15_000
RETRY_S = 1.0


class DeletionFeed:
    """One task per context: follows the event stream and ends local listeners of deleted
    streams. ``start()`` on the first live listener; ``close()`` cancels and awaits the task
    and closes its connection."""

    @classmethod
    def of(cls, ctx) -> "DeletionFeed":
        return ctx.part(cls, lambda: cls._made_for(ctx))

    @classmethod
    def _made_for(cls, ctx) -> "DeletionFeed":
        feed = cls(StreamHub.of(ctx), nodes=ctx.nodes, key=key_layout(ctx.config).events, origin=ctx.origin)
        ctx.on_close(feed.close)
        return feed

    def __init__(self, hub: StreamHub, *, nodes, key: str, origin: str) -> None:
        self._hub = hub
        self._nodes = nodes
        self._key = key
        self.origin = origin  # this context's own notices are skipped
        self._task: asyncio.Task | None = None
        self.joined = asyncio.Event()  # set once the feed reads: later notices reach it

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stream-deletion-feed")

    async def _run(self) -> None:
        after = None
        attempt = 0
        while True:
            client = None
            try:
                node = self._nodes.for_key(self._key)
                client = aioredis.Redis.from_url(  # a blocking read, named like the pools' connections
                    node.url, decode_responses=True, client_name=f"streamsite:events:{os.getpid()}",
                    **BlockingReadPool.connection_options,
                )
                if after is None:
                    after = await last_generated_id(client, self._key)
                    self.joined.set()
                while True:
                    reply = await client.xread({self._key: after}, count=100, block=BLOCK_MS)
                    raise_if_cancelled()
                    attempt = 0
                    for _key, entries in reply or ():
                        for entry_id, fields in entries:
                            after = entry_id
                            self._handle(fields)
            except RedisError as exc:
                raise_if_cancelled()
                attempt += 1
                if is_redirect(exc):  # the events' slot moved: follow it at once
                    await self._nodes.recover(attempt, force=True)
                    continue
                log.warning("deletion feed: %s; retrying in %.0f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                await self._nodes.recover(0, force=True)
            finally:
                if client is not None:
                    await asyncio.shield(client.aclose())

    def _handle(self, fields: dict) -> None:
        if fields.get("kind") != "deleted" or fields.get("origin") == self.origin:
            return
        try:
            names = json.loads(fields.get("names", "[]"))
        except ValueError:
            log.warning("deletion feed: an unreadable notice: %r", fields)
            return
        self._hub.notify_deleted([n for n in names if isinstance(n, str)])

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
