"""StreamHub: one process's live reads, shared by all of its listeners.

A few reader tasks ``XREAD BLOCK`` over every stream that has listeners (at most
``keys_per_reader`` keys each) on connections borrowed from the blocking pool of the stream's
Redis node (streams/engine/nodes.py), and fan
each entry out to the listeners' bounded queues. So Redis sees a handful of blocked clients
per process however many SSE/WebSocket listeners there are.

- Readers read forward from a concrete id per key (the key's last-generated-id when it
  joined, or ``0-0`` for a stream that does not exist yet): never ``$``, which would lose
  entries added between two XREADs.
- A key that joins wakes its reader with ``CLIENT UNBLOCK`` so it need not wait out a BLOCK.
- A reader that loses its connection gets another (with backoff) and carries on from its
  last ids: nothing is lost and listeners stay connected. On a Redis Cluster a reader reads
  the keys of one slot (one bucket, streams/store/keys.py) on that slot's primary; when the slot
  moves (``MOVED``, ``UNBLOCKED``, a failover) it re-reads the slot map and goes on from the
  same ids on the new primary.
- A listener whose queue is full is *ended* with reason ``overflow`` (the hub never blocks
  on a slow listener); the client resumes with Last-Event-ID and loses nothing.
- Listeners do their own catch-up (XRANGE) after subscribing and drop queued entries at or
  before the last id they delivered, so there is no gap and no duplicate at the boundary.

The hub owns its reader tasks: ``close()`` ends every listener, then cancels and awaits them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.core.aio import OwnedTasks, cancel_and_wait, raise_if_cancelled, settle
from streams.core.compat import raw_connection
from streams.core.instruments import timed
from streams.engine.nodes import Node, NodeMap, is_redirect
from streams.engine.pool import PoolClosedError
from streams.store.keys import KeyLayout, key_layout
from streams.store.names import entry_fields
from streams.store.positions import id_order, last_generated_id

log = logging.getLogger(__name__)

BLOCK_MS = 2000  # a safety net only: joins wake the reader at once
READ_COUNT = 100  # per key per XREAD
BACKOFF_START = 0.05
BACKOFF_MAX = 2.0
WAKE_RESOLUTION = 0.25  # s: how late the hub's clock may wake a listener past its deadline


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry as delivered to listeners. ``data_json`` is encoded once, shared."""

    name: str
    id: str
    pos: int  # positions.id_order(id)
    data_json: str


def make_entry(name: str, entry_id: str, fields: dict[str, str]) -> Entry:
    return Entry(name=name, id=entry_id, pos=id_order(entry_id), data_json=json.dumps(fields))


@dataclass(frozen=True, slots=True)
class Rewound:
    """A mark in a listener's queue: stream ``name``'s ids went back below what its reader had
    read (found after a lost connection: a failover to a primary whose clock is behind, or a
    Redis that lost the stream's tail). Entries queued before it are the old primary's; what
    follows it comes from the stream as it is now. The listener's loop turns it into a
    ``Reset`` (follow.py)."""

    name: str


class Subscription:
    """One listener's bounded queue of entries across one or more streams.

    Kept small, since a process holds 10,000 of them: a plain list (swapped out whole by the
    reader side) and a future only while the listener actually waits — an ``asyncio.Queue``
    or ``Event`` costs ~1.5 KB of deques per listener even when idle."""

    __slots__ = ("names", "maxsize", "_items", "_waiter", "deadline", "end_reason", "end_detail", "marked")

    def __init__(self, names: tuple[str, ...], maxsize: int) -> None:
        self.names = names
        self.maxsize = maxsize
        self._items: list[Entry] = []
        self._waiter: asyncio.Future | None = None
        self.deadline = 0.0  # while waiting: when the hub's clock wakes it empty-handed
        self.end_reason: str | None = None  # "overflow", "deleted", "shutdown"
        self.end_detail: str = ""
        self.marked = False  # a Rewound mark is queued among the entries

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def push(self, entry: Entry) -> int:
        """Queue an entry: 1 queued, 0 ignored (already ended), -1 overflowed by this entry."""
        if self.end_reason is not None:
            return 0
        if len(self._items) >= self.maxsize:
            self.end("overflow", f"more than {self.maxsize} events queued: the client reads too slowly")
            return -1
        self._items.append(entry)
        self._wake()
        return 1

    def push_rewound(self, name: str) -> None:
        """Queue a ``Rewound`` mark after the entries already queued (never an overflow)."""
        if self.end_reason is not None:
            return
        self._items.append(Rewound(name))
        self.marked = True
        self._wake()

    def end(self, reason: str, detail: str = "") -> None:
        if self.end_reason is None:
            self.end_reason = reason
            self.end_detail = detail
        self._wake()

    def waiter(self, deadline: float) -> asyncio.Future | None:
        """A future to await when nothing is queued (None: ``take()`` at once). Done by
        ``push``, ``end`` or the hub's clock once ``deadline`` (``time.monotonic()``) passed,
        within ``WAKE_RESOLUTION``.

        No timer per wait: an ``asyncio.timeout`` per delivery per listener cost ~18% of the
        process at 10,000 listeners (py-spy) and five objects each for the GC to examine; and
        no coroutine around it (the caller awaits the future itself): one object fewer per
        waiting listener for every collection."""
        if self._items or self.end_reason is not None or deadline <= time.monotonic():
            return None
        self.deadline = deadline
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def take(self) -> list[Entry]:
        """Everything queued (and no waiter any more); with ``marked``, ``Rewound`` marks too."""
        self._waiter = None
        batch = self._items.copy()
        self._items.clear()  # the same list stays: nothing new for the collector per wake
        return batch

    def wake_if_due(self, now: float) -> None:
        if self._waiter is not None and self.deadline <= now:
            self._wake()


@dataclass(frozen=True)
class HubStats:
    listeners: int = 0
    keys: int = 0
    readers: int = 0
    events_delivered: int = 0
    overflow_disconnects: int = 0
    reconnects: int = 0
    rehomes: int = 0


class _Reader:
    """One XREAD BLOCK loop over a shard of keys, all in one slot on a cluster (``slot``; None
    on a standalone Redis, where one XREAD may name any keys)."""

    def __init__(self, hub: "StreamHub", index: int, slot: int | None) -> None:
        self.hub = hub
        self.index = index
        self.slot = slot
        self.cursors: dict[str, str] = {}  # name -> last id read
        self.key_of: dict[str, str] = {}  # name -> its Redis key (made once, not per XREAD)
        self.name_of: dict[str, str] = {}  # key -> name
        self.client_id: int | None = None
        self.node: Node | None = None  # where client_id lives (CLIENT UNBLOCK goes there)
        self.blocked = False
        self.failing = False  # its last read failed and it is backing off: Redis cannot be reached
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"stream-hub-reader-{self.index}")

    async def _run(self) -> None:
        backoff = BACKOFF_START
        nodes = self.hub._nodes
        attempt = 0
        lost = False  # the last connection failed: Redis may have restarted, or failed over
        while self.cursors:
            try:
                node = nodes.for_slot(self.slot)
                async with node.blocking.client() as client:
                    self.client_id = await client.client_id()
                    self.node = node
                    if lost:
                        await self._check_after_loss(client)
                        lost = False
                    backoff, attempt = BACKOFF_START, 0
                    self.failing = False
                    await self._read_loop(client)
            except asyncio.CancelledError:
                raise
            except PoolClosedError:
                lost = True
                if self.hub._closed or nodes.closed:
                    return
                attempt += 1
                await nodes.recover(attempt, force=True)  # that node was retired: its slots moved
                continue
            except Exception as exc:
                lost = True
                if is_redirect(exc):  # the slot moved (or its primary was demoted): re-home now
                    self.hub._rehomes += 1
                    attempt += 1
                    log.info("stream hub reader %d: %s; re-homing", self.index, exc)
                    await nodes.recover(attempt, force=True)
                    continue
                self.hub._reconnects += 1
                self.failing = True
                if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, RedisError)):
                    log.warning("stream hub reader %d lost Redis (%s); retrying in %.2fs", self.index, exc, backoff)
                else:  # a bug must not silently stop delivery: log, back off, go on
                    log.exception("stream hub reader %d failed; restarting", self.index)
                await nodes.map_change(backoff * (1 + random.random() / 4))
                backoff = min(backoff * 2, BACKOFF_MAX)
                await nodes.recover(0, force=True)  # a failover moves slots too
            finally:
                self.client_id = None
                self.node = None
                self.blocked = False

    async def _check_after_loss(self, client) -> None:
        """After a lost connection, compare each stream this reader had read entries of with
        Redis now (one ``XINFO STREAM`` each, one pipeline):

        - gone: Redis lost it (restarted without persistence, or a failover before it was
          replicated) or it was deleted behind the service. Its listeners' positions can never
          be caught up with, so they end as ``deleted`` rather than wait on a stream that no
          longer exists. (A publish that re-creates the stream before this check hides the
          loss: its entries, newer than the listener's position, simply arrive.)
        - its last generated id is below what was read (a failover to a primary that lost the
          tail, whose clock may be behind): new entries could get ids below the cursor and an
          XREAD after it would skip them — a silent hole. The cursor goes back to that id (an
          entry deleted with XDEL does not lower it: no false alarm), and every listener gets a ``Rewound`` mark (a ``Reset``, then the stream from
          its first entry, as for a resume past the stream's end)."""
        names = [name for name, cursor in self.cursors.items() if cursor != "0-0"]
        if not names:
            return
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xinfo_stream(self.key_of[name])
            replies = await pipe.execute(raise_on_error=False)
        gone, rewound = [], []
        for name, reply in zip(names, replies):
            if isinstance(reply, ResponseError):
                if "no such key" in str(reply).lower():
                    gone.append(name)
                continue
            last = reply.get("last-generated-id") if isinstance(reply, dict) else None
            last = last.decode() if isinstance(last, bytes) else last
            if last and name in self.cursors and id_order(last) < id_order(self.cursors[name]):
                self.cursors[name] = last
                rewound.append(name)
        if gone:
            log.warning("stream hub reader %d: %d followed stream(s) are gone from Redis (%s); ending their listeners",
                        self.index, len(gone), ", ".join(gone[:5]))
            self.hub.notify_deleted(gone)
        if rewound:
            log.warning("stream hub reader %d: the ids of %d followed stream(s) went back (%s); resetting their listeners",
                        self.index, len(rewound), ", ".join(rewound[:5]))
            self.hub.notify_rewound(rewound)

    def add(self, name: str, key: str, cursor: str) -> None:
        self.cursors[name] = cursor
        self.key_of[name] = key
        self.name_of[key] = name

    def remove(self, name: str) -> None:
        self.cursors.pop(name, None)
        key = self.key_of.pop(name, None)
        self.name_of.pop(key, None)

    async def _read_loop(self, client) -> None:
        """XREAD BLOCK after the cursors, fan out, again. The command goes straight to the
        client's one connection (``compat.raw_connection``: its ``send_command`` and
        ``read_response``): redis-py's ``xread()`` costs a pool round, a retry wrapper and a lag
        recording per call, which on a cluster — one reader per bucket, so more, smaller reads —
        was a quarter of the process (py-spy, docs/benchmarks.md (m)). Any failure
        (cancellation included) makes ``read_response`` drop the connection, so it never
        carries a half-read reply."""
        key_of, name_of = self.key_of, self.name_of
        async with raw_connection(client) as (send_command, read_response):
            while self.cursors:
                names = list(self.cursors)
                self.blocked = True
                try:
                    with timed("xread_hub"):
                        await send_command(
                            "XREAD", "COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS",
                            *[key_of[name] for name in names], *[self.cursors[name] for name in names],
                        )
                        reply = await read_response()
                    raise_if_cancelled()
                finally:
                    self.blocked = False
                for key, entries in (reply.items() if isinstance(reply, dict) else reply or ()):
                    name = name_of.get(key)
                    if name is None or not entries:
                        continue  # left the read set meanwhile
                    self.cursors[name] = entries[-1][0]
                    self.hub._fan_out(name, entries)


class StreamHub:
    @classmethod
    def of(cls, ctx) -> "StreamHub":
        """``ctx``'s hub: ends its listeners of streams deleted through this process."""
        return ctx.part(cls, lambda: cls._made_for(ctx))

    @classmethod
    def _made_for(cls, ctx) -> "StreamHub":
        hub = cls(
            nodes=ctx.nodes, keys=key_layout(ctx.config),
            keys_per_reader=settings.STREAM_HUB_KEYS_PER_READER, queue_size=settings.SSE_QUEUE_SIZE,
        )
        ctx.on_close(hub.close)
        ctx.on_streams_changed(lambda names, deleted: hub.notify_deleted(names) if deleted else None)
        return hub

    def __init__(self, *, nodes: NodeMap, keys: KeyLayout, keys_per_reader: int, queue_size: int) -> None:
        self._nodes = nodes
        self._keys = keys
        self._keys_per_reader = keys_per_reader
        self._queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._reader_of: dict[str, _Reader] = {}
        self._readers: list[_Reader] = []
        self._joining: dict[str, asyncio.Future] = {}
        self._delivered = 0
        self._overflows = 0
        self._reconnects = 0
        self._rehomes = 0
        self._closed = False
        self._next_index = 0
        self._chores = OwnedTasks()  # wake-ups and retiring readers; cancelled and awaited by close()
        self._attach_waiters: dict[str, list[asyncio.Future]] = {}
        self._clock: asyncio.Task | None = None  # wakes listeners whose deadline passed

    # --- listeners -----------------------------------------------------------------------
    async def subscribe(self, names: list[str] | tuple[str, ...]) -> Subscription:
        """Register a listener on ``names``; entries newer than each key's join point arrive."""
        if self._closed:
            raise PoolClosedError("stream hub is shut down")
        sub = Subscription(tuple(names), self._queue_size)
        if self._clock is None:
            self._clock = asyncio.get_running_loop().create_task(self._wake_due(), name="stream-hub-clock")
        for name in sub.names:
            self._subs.setdefault(name, set()).add(sub)
        try:
            await asyncio.gather(*(self._ensure_key(name) for name in sub.names))
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub

    async def _wake_due(self) -> None:
        """One clock for every listener's heartbeat and re-check deadline (see Subscription.waiter)."""
        while True:
            await asyncio.sleep(WAKE_RESOLUTION)
            now = time.monotonic()
            for subs in self._subs.values():
                for sub in subs:
                    sub.wake_if_due(now)

    def unsubscribe(self, sub: Subscription) -> None:
        for name in sub.names:
            subs = self._subs.get(name)
            if subs is None:
                continue
            subs.discard(sub)
            if not subs:
                del self._subs[name]
                self._drop_key(name)

    def notify_deleted(self, names: list[str]) -> int:
        """End the listeners of deleted streams with reason ``deleted``. Returns how many."""
        ended = 0
        for name in names:
            for sub in list(self._subs.get(name, ())):
                sub.end("deleted", name)
                ended += 1
        return ended

    def notify_rewound(self, names: list[str]) -> None:
        """Queue a ``Rewound`` mark for every listener of ``names`` (their ids went back)."""
        for name in names:
            for sub in list(self._subs.get(name, ())):
                sub.push_rewound(name)

    def followed(self) -> int:
        """How many streams the readers read (O(1), unlike ``stats()``)."""
        return len(self._reader_of)

    def followed_names(self) -> list[str]:
        """The streams at least one listener follows now."""
        return list(self._subs)

    def reads(self, name: str) -> bool:
        """Whether a reader already reads ``name`` (a new listener of it adds no key)."""
        return name in self._reader_of or name in self._joining

    def connected(self, name: str) -> bool:
        """False while the reader of ``name`` cannot reach its Redis (its read failed and it is
        backing off, or cannot get a connection): what a page shows as a lost connection, not
        as a rider who stopped. True for a stream no reader reads."""
        reader = self._reader_of.get(name)
        return reader is None or not reader.failing

    async def reading(self, name: str) -> None:
        """Return once a reader reads ``name``: an entry added after this reaches its
        listeners. (What a caller that just started a follow elsewhere can await.)"""
        if name in self._reader_of:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._attach_waiters.setdefault(name, []).append(waiter)
        try:
            await waiter
        finally:
            waiters = self._attach_waiters.get(name, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._attach_waiters.pop(name, None)

    def stats(self) -> HubStats:
        listeners = len({id(s) for subs in self._subs.values() for s in subs})
        return HubStats(
            listeners=listeners,
            keys=len(self._reader_of),
            readers=len(self._readers),
            events_delivered=self._delivered,
            overflow_disconnects=self._overflows,
            reconnects=self._reconnects,
            rehomes=self._rehomes,
        )

    def begin_shutdown(self) -> None:
        """Refuse new listeners and end every current one with reason ``shutdown``."""
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.end("shutdown", "server is shutting down: reconnect with Last-Event-ID")

    async def drain(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` s) until every listener has unsubscribed."""
        try:
            async with asyncio.timeout(timeout):
                while self._subs:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """End every listener, then cancel and await every reader."""
        self.begin_shutdown()
        readers, self._readers = self._readers, []
        self._reader_of.clear()
        for reader in readers:
            reader.cursors.clear()
        clock, self._clock = self._clock, None
        await asyncio.gather(*(cancel_and_wait(t) for t in [*(r.task for r in readers), clock]), self._chores.cancel())

    # --- keys and readers ----------------------------------------------------------------
    async def _ensure_key(self, name: str) -> None:
        if name in self._reader_of:
            return
        pending = self._joining.get(name)
        if pending is not None:
            await asyncio.shield(pending)
            return
        future = self._joining[name] = asyncio.get_running_loop().create_future()
        try:
            await settle(future, self._join(name))
        finally:
            del self._joining[name]

    async def _join(self, name: str) -> None:
        cursor = await self._join_point(name)
        if name in self._subs and name not in self._reader_of and not self._closed:
            self._attach(name, cursor)

    async def _join_point(self, name: str) -> str:
        """The concrete id to read after: last-generated-id, or 0-0 for a missing stream."""
        key = self._keys.stream(name)
        return await self._nodes.run(key, lambda r: last_generated_id(r, key))

    def _attach(self, name: str, cursor: str) -> None:
        key = self._keys.stream(name)
        slot = self._nodes.slot_of(key)
        reader = next((r for r in self._readers if r.slot == slot and len(r.cursors) < self._keys_per_reader), None)
        if reader is None:
            reader = _Reader(self, self._next_index, slot)
            self._next_index += 1
            self._readers.append(reader)
        reader.add(name, key, cursor)
        self._reader_of[name] = reader
        for waiter in self._attach_waiters.pop(name, ()):
            if not waiter.done():
                waiter.set_result(None)
        if reader.task is None or reader.task.done():
            reader.start()
        else:
            self._wake(reader)

    def _drop_key(self, name: str) -> None:
        reader = self._reader_of.pop(name, None)
        if reader is None:
            return
        reader.remove(name)
        if not reader.cursors:
            # Its loop ends by itself once woken (or when its BLOCK times out).
            self._readers.remove(reader)
            self._wake(reader)
            if reader.task is not None:
                self._own(reader.task)

    def _wake(self, reader: _Reader) -> None:
        """Interrupt a reader's BLOCK so it re-reads its key set."""
        if reader.client_id is None or not reader.blocked or reader.node is None:
            return  # it will see the new key set before its next XREAD
        client_id, node = reader.client_id, reader.node

        async def unblock() -> None:
            try:
                async with node.main.client() as r:
                    # The XREAD may not have reached Redis yet: retry briefly while the
                    # reader still waits on the same connection.
                    for _ in range(20):
                        if await r.client_unblock(client_id) or not reader.blocked or reader.client_id != client_id:
                            return
                        await asyncio.sleep(0.005)
            except RedisError as exc:  # the reader's BLOCK times out soon anyway
                log.debug("CLIENT UNBLOCK %s failed: %s", client_id, exc)

        self._own(asyncio.get_running_loop().create_task(unblock()))

    def _own(self, task: asyncio.Task) -> None:
        self._chores.add(task)

    def _fan_out(self, name: str, entries) -> None:
        subs = self._subs.get(name)
        if not subs:
            return
        for entry_id, fields in entries:
            entry = make_entry(name, entry_id, entry_fields(fields))
            for sub in list(subs):
                outcome = sub.push(entry)
                if outcome > 0:
                    self._delivered += 1
                elif outcome < 0:
                    self._overflows += 1
