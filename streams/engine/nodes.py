"""The Redis primaries one event loop talks to, and which hash slots each one serves.

A standalone Redis is a map of one node serving every slot; a Redis Cluster is read from
``CLUSTER SLOTS`` (asked of any known node: ``REDIS_URL``, ``REDIS_CLUSTER_NODES``, or a
primary seen before). So the rest of the service has one code path: it asks for the node of a
key or a bucket and borrows a client from that node's pools.

Every node has its own main and blocking pool (streams/engine/pool.py), so a process holds at most
``nodes × (REDIS_POOL_MAX + REDIS_BLOCKING_POOL_MAX)`` connections for requests and live reads,
plus one for deletion notices, however many streams or listeners there are.

Redirects: ``run(key, op)`` runs ``op(client)`` on the key's node and, while slots move,

- ``MOVED`` (the slot lives elsewhere now): refresh the map, run again on the new owner;
- ``ASK`` (the slot is being migrated and this key is already on the target): run once on the
  target after ``ASKING``;
- ``TRYAGAIN`` (a multi-key command mid-migration), ``CLUSTERDOWN``, ``-UNBLOCKED``, a dropped
  connection (a failover): back off briefly, refresh, run again,

until ``REDIRECT_DEADLINE_S`` has passed. A refresh asks at most once per ``REFRESH_MIN_S``
(unless forced: a ``MOVED`` or a reader re-homing), and concurrent callers share one. The pools
of a node that stopped being a primary are closed by tasks the map owns (``close()`` cancels
and awaits them).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.core.aio import OwnedTasks
from streams.core.compat import pipeline_length
from streams.engine.batching import ScriptBatcher
from streams.engine.config import RedisConfig
from streams.engine.pool import BlockingReadPool, ClientPool, PoolClosedError, PoolStats

log = logging.getLogger(__name__)

SLOTS = 16384
REFRESH_MIN_S = 0.2  # at most one CLUSTER SLOTS per this interval (a reshard moves slots in steps)
REDIRECT_DEADLINE_S = 5.0
BACKOFF_S = 0.02
PROBE_TIMEOUT_S = 1.0
RETIRE_GRACE_S = 2.0  # a node that stopped being a primary still sends the publishes queued for it


class ClusterMapError(RedisConnectionError):
    """No known node answered CLUSTER SLOTS (503 to API callers)."""


def is_redirect(exc: BaseException) -> bool:
    """A reply that means "this key is not served here right now" (see the module docstring)."""
    if isinstance(exc, (AskError, TryAgainError, ClusterDownError)):  # AskError covers MovedError
        return True
    if isinstance(exc, ResponseError):
        head = str(exc).split(" ", 1)[0]
        return head in ("UNBLOCKED", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "MASTERDOWN")
    return False


def is_transient(exc: BaseException) -> bool:
    """Worth a refresh and another try: a redirect, or a connection that dropped (failover)."""
    return is_redirect(exc) or isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, PoolClosedError))


def node_url(base_url: str, address: str) -> str:
    """``base_url`` (scheme, credentials, options) pointed at ``host:port``, database 0."""
    parts = urlsplit(base_url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{address}" if auth else address
    return urlunsplit(parts._replace(netloc=netloc, path=""))


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


@dataclass
class Node:
    address: str  # host:port
    url: str
    main: ClientPool
    blocking: BlockingReadPool
    publishes: ScriptBatcher

    async def close(self) -> None:
        await self.publishes.close()
        await asyncio.gather(self.main.close(), self.blocking.close())

    def retire_grace_s(self) -> float:
        """Long enough for a pipeline in flight to end, its ``WAIT`` for a replica included: a
        pipeline cut meanwhile would have written entries its callers then publish again."""
        return RETIRE_GRACE_S + self.publishes.replica_wait_s()

    async def retire(self) -> None:
        """No longer a primary (failover, reshard): publishes already queued for it are still
        sent (their replies, or MOVED, reach their callers), then it closes."""
        try:
            await self.publishes.retire(f"redis node {self.address} is no longer a primary", grace_s=self.retire_grace_s())
        finally:
            await self.close()


class NodeMap:
    def __init__(self, config: RedisConfig, *, cluster: bool) -> None:
        self.config = config
        self.cluster = cluster
        self._nodes: dict[str, Node] = {}  # address -> node, current primaries
        self._owner: list[str] = []  # slot -> address (cluster only)
        self._map_changed = asyncio.Event()  # set (and replaced) when a refresh moves a slot
        self._seed = _address(config.url)
        self._refreshed_at = float("-inf")
        self._refreshing: asyncio.Future | None = None
        self._retired = OwnedTasks()  # nodes closing after they left the map; map reads after a per_node failure
        self._closed = False
        self.redirects = 0

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.cluster:
            self._nodes[self._seed] = self._make_node(self._seed, self.config.url)
        else:
            await self.refresh(force=True)
        await asyncio.gather(*(self._start_node(n) for n in self._nodes.values()))

    async def close(self) -> None:
        self._closed = True
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(n.close() for n in nodes), self._retired.cancel())

    @property
    def closed(self) -> bool:
        return self._closed

    def _make_node(self, address: str, url: str) -> Node:
        main = ClientPool(url, self.config.main_pool_limits, name="main")
        blocking = BlockingReadPool(url, self.config.blocking_pool_limits, name="blocking")
        publishes = ScriptBatcher(main, replica_wait_ms=self.config.replica_wait_ms)
        return Node(address=address, url=url, main=main, blocking=blocking, publishes=publishes)

    @staticmethod
    async def _start_node(node: Node) -> None:
        await asyncio.gather(node.main.start(), node.blocking.start())

    # --- where keys live -----------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def for_slot(self, slot: int | None) -> Node:
        if not self._nodes:
            raise PoolClosedError("redis connections are shut down")
        if not self.cluster or slot is None:
            return next(iter(self._nodes.values()))
        node = self._nodes.get(self._owner[slot]) if self._owner else None
        if node is None:
            raise ClusterMapError(f"no primary serves slot {slot} (cluster map being refreshed)")
        return node

    def for_key(self, key: str) -> Node:
        return self.for_slot(key_slot(key.encode()) if self.cluster else None)

    def slot_of(self, key: str) -> int | None:
        """The key's slot when slots matter (cluster), else None (one node reads everything)."""
        return key_slot(key.encode()) if self.cluster else None

    def stats(self, which: str) -> PoolStats:
        """``main`` or ``blocking`` pool figures summed over every node."""
        parts = [getattr(n, which).stats() for n in self._nodes.values()]
        return PoolStats(*(sum(getattr(p, f) for p in parts) for f in ("total", "in_use", "available", "waiting")))

    # --- the map -------------------------------------------------------------------------------
    async def refresh(self, *, force: bool = False) -> None:
        """Read the slot map again (cluster only; at most once per REFRESH_MIN_S unless forced).
        Concurrent callers share one refresh."""
        if not self.cluster or self._closed:
            return
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        if not force and time.monotonic() - self._refreshed_at < REFRESH_MIN_S:
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            owner = await self._read_slots()
            self._install(owner)
            self._refreshed_at = time.monotonic()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._refreshing.cancel()
            else:
                self._refreshing.set_exception(exc)
                self._refreshing.exception()  # retrieved: waiters see it, nobody logs it
            raise
        else:
            self._refreshing.set_result(None)
        finally:
            self._refreshing = None

    async def _read_slots(self) -> list[str]:
        known = list(self._nodes)
        random.shuffle(known)  # spread the map reads over the primaries
        candidates = list(dict.fromkeys([*known, self._seed, *self.config.cluster_nodes]))
        errors = []
        for address in candidates:
            client = aioredis.Redis.from_url(
                node_url(self.config.url, address), socket_connect_timeout=PROBE_TIMEOUT_S,
                socket_timeout=PROBE_TIMEOUT_S, decode_responses=True,
            )
            try:
                ranges = await client.execute_command("CLUSTER SLOTS")
            except (RedisError, OSError) as exc:
                errors.append(f"{address}: {exc}")
                continue
            finally:
                await client.aclose()
            owner = [""] * SLOTS
            for start, end, primary, *_replicas in ranges:
                host, port = primary[0], primary[1]
                host = host or address.rpartition(":")[0]  # an empty host means "the node you asked"
                owner[int(start): int(end) + 1] = [f"{host}:{port}"] * (int(end) - int(start) + 1)
            if all(owner):
                return owner
            errors.append(f"{address}: not every slot is served (cluster_state not ok)")
        raise ClusterMapError("no Redis Cluster node gave a complete slot map: " + "; ".join(errors))

    def _install(self, owner: list[str]) -> None:
        wanted = set(owner)
        for address in wanted - set(self._nodes):
            node = self._nodes[address] = self._make_node(address, node_url(self.config.url, address))
            self._own(self._start_node(node))
        for address in set(self._nodes) - wanted:  # no longer a primary (failover, removed)
            self._own(self._nodes.pop(address).retire())
        if owner != self._owner:
            self._map_changed.set()
            self._map_changed = asyncio.Event()
        self._owner = owner

    async def map_change(self, timeout: float) -> None:
        """Back off ``timeout`` s, or less if a refresh (anyone's: a publish's, a re-check's)
        moves a slot meanwhile: a reader waiting out a failover wakes when the map learns
        the promoted replica, not at the end of its backoff."""
        changed = self._map_changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            pass

    def _own(self, coro) -> None:
        self._retired.start(coro)

    # --- running commands ----------------------------------------------------------------------
    async def run(self, key: str, op: Callable[[aioredis.Redis], Awaitable]):
        """``op(client)`` on the primary serving ``key``, following redirects (module docstring)."""
        deadline = time.monotonic() + REDIRECT_DEADLINE_S
        attempt = 0
        while True:
            try:
                async with self.for_key(key).main.client() as r:
                    return await op(r)
            except Exception as exc:
                if not self.cluster or not is_transient(exc) or time.monotonic() > deadline or self._closed:
                    raise
                attempt += 1
                self.redirects += 1
                if isinstance(exc, AskError) and not isinstance(exc, MovedError):
                    asked = await self._asking(exc, op)
                    if asked is not _RETRY:
                        return asked
                await self.recover(attempt, force=not is_redirect(exc) or isinstance(exc, MovedError))

    async def recover(self, attempt: int, *, force: bool = False) -> None:
        """Between two tries after a redirect or a dropped connection: back off, re-read the map."""
        await asyncio.sleep(min(BACKOFF_S * 2 ** min(attempt, 5), 0.5) * (0.5 + random.random()))
        try:
            await self.refresh(force=force)
        except ClusterMapError as exc:
            log.warning("redis cluster map: %s", exc)

    async def _asking(self, exc: AskError, op):
        target = self._nodes.get(f"{exc.host}:{exc.port}")
        if target is None:
            return _RETRY
        try:
            async with target.main.client() as r:
                await r.execute_command("ASKING")
                return await op(r)
        except Exception as again:
            if is_transient(again):
                return _RETRY
            raise

    async def pipelined(self, keys: list[str], queue: Callable, *, raise_on_error: bool = True) -> list[list]:
        """``queue(pipe, i)`` queues item ``i``'s commands (item i concerns ``keys[i]``): one
        pipeline per node, the nodes concurrently; each item's replies in a list, in order. An
        item redirected meanwhile (a reshard), or every item of a node whose connection failed
        (a failover), is run again alone through ``run``. Run again, a write script is run
        twice only if its first reply was lost with the connection."""
        by_node: dict[str, list[int]] = defaultdict(list)
        node_at: dict[str, Node] = {}
        for i, key in enumerate(keys):
            node = self.for_key(key)
            node_at[node.address] = node  # held: a map refresh meanwhile may retire it
            by_node[node.address].append(i)
        results: list[list] = [[] for _ in keys]

        async def on_node(node: Node, items: list[int]) -> None:
            try:
                async with node.main.client() as r:
                    replies = await _queued(r, items, queue)
            except Exception as exc:  # the node went (a failover): each item follows its slot
                if not self.cluster or not is_transient(exc):
                    raise
                for i in items:
                    results[i] = await self.run(keys[i], lambda r, i=i: _alone(r, i, queue))
                return
            for i, item_replies in zip(items, replies):
                results[i] = item_replies

        await asyncio.gather(*(on_node(node_at[a], items) for a, items in by_node.items()))
        for i, item_replies in enumerate(results):
            if self.cluster and _redirected(item_replies):
                results[i] = await self.run(keys[i], lambda r, i=i: _alone(r, i, queue))
        if raise_on_error:
            for item_replies in results:
                for reply in item_replies:
                    if isinstance(reply, Exception):
                        raise reply
        return results


    async def per_node(self, keys: list[str], queue: Callable, *, timeout: float) -> list[list | BaseException]:
        """Like ``pipelined`` for reads that may come later instead: one pipeline per node, the
        nodes concurrently, each under its own ``timeout``, nothing retried. An item's replies,
        or the error of its node (a ``RedisTimeoutError`` when it did not answer in time, a
        dropped connection in a failover) or its own redirect (a reshard). One node that cannot
        answer delays only its own items. A failed node makes the map read again (not awaited)."""
        by_node: dict[str, list[int]] = defaultdict(list)
        node_at: dict[str, Node] = {}
        for i, key in enumerate(keys):
            node = self.for_key(key)
            node_at[node.address] = node
            by_node[node.address].append(i)
        results: list[list | BaseException] = [[] for _ in keys]
        moved = False

        async def on_node(node: Node, items: list[int]) -> None:
            nonlocal moved
            try:
                async with asyncio.timeout(timeout):
                    async with node.main.client() as r:
                        replies = await _queued(r, items, queue)
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    exc = RedisTimeoutError(f"redis {node.address} did not answer within {timeout:g} s")
                elif not is_transient(exc):
                    raise
                moved = True
                for i in items:
                    results[i] = exc
                return
            for i, item_replies in zip(items, replies):
                redirect = _redirected(item_replies)
                moved = moved or redirect is not None
                results[i] = item_replies if redirect is None else redirect

        await asyncio.gather(*(on_node(node_at[a], items) for a, items in by_node.items()))
        if moved and self.cluster and not self._closed:
            self._own(self.recover(0))
        return results


async def _queued(r, items: list[int], queue) -> list[list]:
    """Run the items' commands in one pipeline on ``r``; their replies grouped per item."""
    async with r.pipeline(transaction=False) as pipe:
        sizes = []
        for i in items:
            before = pipeline_length(pipe)
            queued = queue(pipe, i)
            if inspect.isawaitable(queued):
                await queued
            sizes.append(pipeline_length(pipe) - before)
        flat = await pipe.execute(raise_on_error=False)
    grouped, at = [], 0
    for size in sizes:
        grouped.append(flat[at: at + size])
        at += size
    return grouped


def _redirected(replies: list) -> BaseException | None:
    return next((x for x in replies if isinstance(x, Exception) and is_redirect(x)), None)


async def _alone(r, i: int, queue) -> list:
    """Item ``i``'s commands alone; a redirect is raised (for ``run`` to follow), not returned."""
    (replies,) = await _queued(r, [i], queue)
    redirect = _redirected(replies)
    if redirect is not None:
        raise redirect
    return replies


_RETRY = object()
