"""Concurrent script calls coalesced into one pipeline per round trip.

Fifty devices each publishing one entry per WebSocket frame make fifty EVALSHA round trips
in flight at once; most of each one's cost is the client's, not Redis's (a command packed,
written, parsed, a connection borrowed and returned). A ``ScriptBatcher`` queues the calls made
while its previous pipeline is out and sends them together: one connection, one write, one
read, replies handed back in order. Under light load a call goes out on the next loop turn,
alone; under heavy load batches grow by themselves — no timer, no added wait.

Order: one pipeline is in flight at a time and Redis runs a pipeline's commands in order, so
two calls run in the order they were made — per stream and across streams.

Owner: the node it sends to (streams/engine/nodes.py), owned by the per-loop ``RedisContext``. At
shutdown ``close()`` cancels and awaits the flusher task; calls still queued then fail with
``BatcherClosed``. When a failover or a reshard makes its node no longer a primary,
``retire()`` first lets the flusher send what is queued (each call gets its reply, or a
``MOVED`` its caller follows), so a write is not both sent and reported as failed; only
what is still out after the grace period fails. Both errors are connection errors: a caller
that follows slots tries again on the slot's new node, others answer 503.

Durability (``PUBLISH_DURABILITY=replicated``): each pipeline ends with ``WAIT 1 <ms>`` on the
same connection, so one round trip carries the writes and the wait for a replica to have them
(WAIT covers every write this connection made before it). When no replica confirmed in time,
each call that got a reply fails with ``NotReplicated`` carrying that reply: the write was
made, the caller decides what to say. While no replica answers, the node's calls go out one
pipeline per timeout (one pipeline is in flight at a time: the order rule above).
"""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.core.aio import cancel_and_wait
from streams.engine.pool import ClientPool


class BatcherClosed(RedisConnectionError):
    """The server is shutting down, or the node is no longer a primary: the call may not have
    been sent."""


class NotReplicated(Exception):
    """The call was run on the primary (``reply`` is its reply), but no replica confirmed it
    within ``timeout_ms``: an unplanned failover may lose what it wrote."""

    def __init__(self, reply, *, timeout_ms: int) -> None:
        super().__init__(f"not replicated within {timeout_ms} ms")
        self.reply = reply
        self.timeout_ms = timeout_ms


async def replicas_acked(r, timeout_ms: int) -> int:
    """``WAIT 1 <timeout_ms>`` on ``r``: how many replicas have every write ``r`` made (an error,
    e.g. a node demoted meanwhile, counts as none)."""
    try:
        return int(await r.execute_command("WAIT", 1, timeout_ms))
    except (ResponseError, RedisConnectionError, RedisTimeoutError, OSError):
        return 0  # the writes are made: never a transient error that would run them again


class ScriptBatcher:
    def __init__(self, pool: ClientPool, *, replica_wait_ms: int | None = None) -> None:
        self._pool = pool
        self._replica_wait_ms = replica_wait_ms  # None: acknowledged once the primary ran it
        self._queue: list[tuple[object, list, list, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._closed: str | None = None  # why calls are refused, once closed
        self.batches = 0  # pipelines sent (observable by tests)
        self.calls = 0
        self.batches_unreplicated = 0  # pipelines whose WAIT found no replica in time
        self.calls_unreplicated = 0

    def replica_wait_s(self) -> float:
        """The longest a pipeline waits for a replica (0 when acknowledged by the primary)."""
        return (self._replica_wait_ms or 0) / 1000

    async def call(self, script, keys: list[str], args: list[str]):
        """``script(keys, args)`` in the next pipeline; its reply (or error) comes back here."""
        if self._closed is not None:
            raise BatcherClosed(self._closed)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                replies, acked = await self._send(batch)
            except asyncio.CancelledError:
                _fail(batch, BatcherClosed(self._closed or "the server is shutting down"))
                raise
            except Exception as exc:  # the connection failed: every call of the batch gets it
                _fail(batch, exc)
                continue
            self.batches += 1
            self.calls += len(batch)
            short = acked is not None and acked < 1
            self.batches_unreplicated += int(short)
            for (*_, future), reply in zip(batch, replies, strict=True):
                error = self._error(reply, short)
                if future.done():
                    continue  # the caller was cancelled; the write happened all the same
                if error is None:
                    future.set_result(reply)
                else:
                    future.set_exception(error)

    def _error(self, reply, short: bool) -> BaseException | None:
        """What a call's caller gets instead of its reply, if anything."""
        if isinstance(reply, Exception):
            return reply
        if short:  # it ran, but no replica confirmed the pipeline
            self.calls_unreplicated += 1
            return NotReplicated(reply, timeout_ms=self._replica_wait_ms)
        return None

    async def _send(self, batch) -> tuple[list, int | None]:
        """The calls' replies, and how many replicas confirmed them (None: not asked)."""
        async with self._pool.client() as r:
            replies, acked = await _pipeline(r, batch, self._replica_wait_ms)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:  # Redis restarted or SCRIPT FLUSH: load once, resend those calls
                for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                    await r.script_load(script.script)
                again, acked = await _pipeline(r, [batch[i] for i in missing], self._replica_wait_ms)
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
            return replies, acked

    async def close(self) -> None:
        """Shutdown: what is queued or out fails with ``BatcherClosed``."""
        await self._stop("the server is shutting down", grace_s=0)

    async def retire(self, reason: str, *, grace_s: float) -> None:
        """The node is no longer a primary: new calls fail at once; queued ones are still sent,
        for up to ``grace_s``."""
        await self._stop(reason, grace_s=grace_s)

    async def _stop(self, reason: str, *, grace_s: float) -> None:
        self._closed = self._closed or reason
        if grace_s > 0 and self._flusher is not None:
            await asyncio.wait({self._flusher}, timeout=grace_s)
        await cancel_and_wait(self._flusher)
        _fail(self._queue, BatcherClosed(self._closed))
        self._queue = []


async def _pipeline(r, batch, replica_wait_ms: int | None) -> tuple[list, int | None]:
    pipe = r.pipeline(transaction=False)
    for script, keys, args, _ in batch:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    if replica_wait_ms is None:
        return await pipe.execute(raise_on_error=False), None
    pipe.execute_command("WAIT", 1, replica_wait_ms)
    *replies, acked = await pipe.execute(raise_on_error=False)
    return replies, 0 if isinstance(acked, Exception) else int(acked)


def _fail(batch, exc: BaseException) -> None:
    for *_, future in batch:
        if not future.done():
            future.set_exception(exc)
