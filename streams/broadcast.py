"""Stream deletions, told to every process's hub through a Redis stream of our own.

Each process has its own StreamHub, so a deletion made in one process must reach listeners in
all of them. ``announce_deleted`` ends this context's listeners at once and appends the names
to ``<prefix>{_events}`` (``streams.keys.events_key``; trimmed to ~EVENTS_MAXLEN). Every
context's ``DeletionFeed`` follows that stream with one blocking read on a connection of its
own, from the stream's last id when it starts, and resumes from the last id it saw after a
connection error: a notice published meanwhile is not lost. It skips its own notices (the
listeners were ended at once). The same Redis the service already uses, no channel layer: a
Redis Cluster keeps the stream in one slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.keys import events_key
from streams.pool import BlockingClientPool
from streams.positions import last_generated_id
from streams.tasks import cancel_and_wait, raise_if_cancelled

log = logging.getLogger(__name__)

EVENTS_MAXLEN = 10_000
BLOCK_MS = 15_000
RETRY_S = 1.0


async def announce_deleted(names: list[str], ctx) -> None:
    """End ``ctx``'s listeners of ``names`` now and tell every other process's hub."""
    ctx.hub.notify_deleted(names)
    if not names:
        return
    fields = {"kind": "deleted", "names": json.dumps(names), "origin": ctx.deletions.origin}
    try:
        async with ctx.main.client() as r:
            await r.xadd(events_key(ctx.config.stream_key_prefix), fields, maxlen=EVENTS_MAXLEN, approximate=True)
    except RedisError as exc:  # the delete itself succeeded; other processes' listeners
        log.warning("could not announce the deletion of %d streams: %s", len(names), exc)  # time out


class DeletionFeed:
    """One task per context: follows the event stream and ends local listeners of deleted
    streams. ``start()`` on the first live listener; ``close()`` cancels and awaits the task
    and closes its connection."""

    def __init__(self, hub, *, url: str, prefix: str) -> None:
        self._hub = hub
        self._url = url
        self._key = events_key(prefix)
        self.origin = secrets.token_hex(8)  # this context's own notices are skipped
        self._task: asyncio.Task | None = None
        self.joined = asyncio.Event()  # set once the feed reads: later notices reach it

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stream-deletion-feed")

    async def _run(self) -> None:
        client = aioredis.Redis.from_url(  # a blocking read, named like the pools' connections
            self._url, decode_responses=True, client_name=f"streamsite:events:{os.getpid()}",
            **BlockingClientPool.connection_options,
        )
        after = None
        try:
            while True:
                try:
                    if after is None:
                        after = await last_generated_id(client, self._key)
                        self.joined.set()
                    reply = await client.xread({self._key: after}, count=100, block=BLOCK_MS)
                except RedisError as exc:
                    raise_if_cancelled()
                    log.warning("deletion feed: %s; retrying in %.0f s", exc, RETRY_S)
                    await asyncio.sleep(RETRY_S)
                    continue
                raise_if_cancelled()
                for _key, entries in reply or ():
                    for entry_id, fields in entries:
                        after = entry_id
                        self._handle(fields)
        finally:
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
