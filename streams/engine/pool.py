"""Bounded pools of Redis clients: a minimum kept warm, a FIFO wait queue, idle reaping.

redis-py's own pools have no minimum size, no idle reaping, no background health checks and
no wait-queue statistics, so we pool whole clients instead: each pooled ``Redis`` owns a
private one-connection redis-py pool and is lent to exactly one borrower at a time, who may
run commands and pipelines on it. Our pool adds

- ``min`` clients kept warm, growth to ``max``;
- a FIFO wait queue with an acquire timeout (``PoolExhaustedError``);
- idle reaping down to ``min`` and periodic PINGs of idle clients (one maintenance task,
  owned by the pool, cancelled and awaited by ``close()``);
- ``stats()`` → total / in_use / available / waiting;
- ``close()`` that rejects waiters and disconnects every client, borrowed ones included.

A pool belongs to the event loop that created it (see ``streams.engine.context``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.core.aio import OwnedTasks, cancel_and_wait
from streams.core.instruments import timed
from streams.engine.config import PoolLimits

log = logging.getLogger(__name__)


class PoolExhaustedError(RedisConnectionError):
    """No client became free within the acquire timeout."""


class PoolClosedError(RedisConnectionError):
    """The pool was shut down."""


@dataclass(frozen=True)
class PoolStats:
    total: int
    in_use: int
    available: int
    waiting: int


class _Idle:
    __slots__ = ("client", "since")

    def __init__(self, client: Redis, since: float) -> None:
        self.client = client
        self.since = since


class ClientPool:
    """A pool of exclusive Redis clients. Use ``async with pool.client() as r``."""

    #: extra keyword arguments for every connection (subclasses tune timeouts)
    connection_options: dict = {}

    def __init__(self, url: str, limits: PoolLimits, *, name: str = "main") -> None:
        if limits.min > limits.max or limits.max < 1:
            raise ValueError(f"pool {name}: min={limits.min} max={limits.max} is not a valid range")
        self.url = url
        self.limits = limits
        self.name = name
        self._idle: deque[_Idle] = deque()  # right end = most recently used
        self._all: set[Redis] = set()
        self._slots = 0  # clients that exist or are being created
        self._waiters: deque[asyncio.Future] = deque()
        self._closed = False
        self._maintenance: asyncio.Task | None = None
        self._started = False
        self._closing = OwnedTasks()  # disconnects in flight, awaited by close()

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Create ``min`` connections and start the maintenance task. Idempotent."""
        if self._started:
            return
        self._started = True
        await self._fill_to_min()
        self._maintenance = asyncio.get_running_loop().create_task(
            self._maintain(), name=f"redis-pool-{self.name}-maintenance"
        )

    async def close(self) -> None:
        """Reject waiters, stop maintenance and disconnect every client, borrowed ones too."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosedError(f"redis pool {self.name} is shut down"))
        await cancel_and_wait(self._maintenance)
        self._maintenance = None
        clients = list(self._all)
        self._all.clear()
        self._idle.clear()
        self._slots = 0
        await asyncio.gather(*(self._close_client(c) for c in clients), self._closing.wait(), return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> PoolStats:
        available = len(self._idle)
        return PoolStats(
            total=self._slots,
            in_use=self._slots - available,
            available=available,
            waiting=sum(1 for w in self._waiters if not w.done()),
        )

    # --- borrowing ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Redis]:
        """Borrow a client; it goes back on any exit, cancellation included."""
        client = await self.acquire()
        try:
            yield client
        finally:
            self.release(client)

    async def acquire(self) -> Redis:
        if self._closed:
            raise PoolClosedError(f"redis pool {self.name} is shut down")
        if self._idle:
            return self._idle.pop().client
        with timed(f"pool_acquire_{self.name}"):  # only the calls that had to connect or wait
            if self._slots < self.limits.max:
                self._slots += 1
                return await self._create_in_slot()
            return await self._wait_for_client()

    def release(self, client: Redis) -> None:
        """Return a borrowed client: to the first waiter, else to the idle set."""
        if client not in self._all:
            return  # closed by shutdown or discarded meanwhile
        if self._closed:
            self._forget(client)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(client)
                return
        self._idle.append(_Idle(client, time.monotonic()))

    def discard(self, client: Redis) -> None:
        """Drop a borrowed client that is known to be broken (its slot is freed)."""
        if client in self._all:
            self._forget(client)
            self._free_slot()

    # --- internals ---------------------------------------------------------------------------
    async def _wait_for_client(self) -> Redis:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        timeout = self.limits.acquire_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                got = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a client (or a slot) just as we gave up: pass it on.
                self._pass_on(waiter.result())
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise PoolExhaustedError(
                    f"redis pool {self.name} exhausted: no connection free within "
                    f"{self.limits.acquire_timeout_ms} ms (max {self.limits.max})"
                ) from None
            raise
        if got is None:  # a slot was freed for us: build the client ourselves
            return await self._create_in_slot()
        return got

    def _pass_on(self, got: Redis | None) -> None:
        if got is None:
            self._free_slot()
        else:
            self.release(got)

    def _free_slot(self) -> None:
        """A slot became free: hand it to the first live waiter, or shrink."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._slots -= 1

    async def _create_in_slot(self) -> Redis:
        """Connect a new client in a slot already counted; free the slot on failure."""
        client = self._new_client()
        try:
            await client.ping()
        except BaseException:
            await self._close_client(client)
            if not self._closed:
                self._free_slot()
            raise
        if self._closed:
            await self._close_client(client)
            raise PoolClosedError(f"redis pool {self.name} is shut down")
        self._all.add(client)
        return client

    def _new_client(self) -> Redis:
        pool = ConnectionPool.from_url(
            self.url,
            max_connections=1,
            health_check_interval=self.limits.health_check_interval_ms / 1000,
            client_name=f"streamsite:{self.name}:{os.getpid()}",
            decode_responses=True,
            encoding_errors="replace",
            **self.connection_options,
        )
        return Redis(connection_pool=pool)

    def _forget(self, client: Redis) -> None:
        self._all.discard(client)
        self._closing.start(self._close_client(client))

    @staticmethod
    async def _close_client(client: Redis) -> None:
        with contextlib.suppress(Exception):
            await client.connection_pool.disconnect()

    async def _fill_to_min(self) -> None:
        missing = self.limits.min - self._slots
        if missing <= 0 or self._closed:
            return
        self._slots += missing
        results = await asyncio.gather(
            *(self._create_in_slot() for _ in range(missing)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Redis):
                self.release(result)
            else:
                log.warning("redis pool %s: could not open a warm connection: %s", self.name, result)

    def _maintenance_period(self) -> float:
        periods = [self.limits.idle_timeout_ms, self.limits.health_check_interval_ms]
        positive = [p for p in periods if p > 0] or [1000]
        return max(0.05, min(positive) / 1000 / 2)

    async def _maintain(self) -> None:
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(self._maintenance_period())
            try:
                self.reap_idle()
                interval = self.limits.health_check_interval_ms / 1000
                if interval > 0 and time.monotonic() - last_check >= interval:
                    last_check = time.monotonic()
                    await self.check_idle_health()
                await self._fill_to_min()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep maintaining; a dead Redis is reported by borrowers
                log.exception("redis pool %s: maintenance failed", self.name)

    def reap_idle(self) -> int:
        """Close clients idle longer than the idle timeout, down to ``min``. Returns how many."""
        timeout = self.limits.idle_timeout_ms / 1000
        if timeout <= 0:
            return 0
        now = time.monotonic()
        reaped = 0
        # Oldest idle clients sit at the left end.
        while self._idle and self._slots > self.limits.min and now - self._idle[0].since >= timeout:
            idle = self._idle.popleft()
            self._forget(idle.client)
            self._free_slot()
            reaped += 1
        return reaped

    async def check_idle_health(self) -> int:
        """PING every idle client; drop the ones that fail. Returns how many were dropped."""
        checking = list(self._idle)
        self._idle.clear()
        dropped = 0
        for idle in checking:
            try:
                async with asyncio.timeout(2):
                    await idle.client.ping()
            except (Exception, TimeoutError):
                self._forget(idle.client)
                self._free_slot()
                dropped += 1
            else:
                self.release(idle.client)
                # keep its idle age: a health PING is not use
                if self._idle and self._idle[-1].client is idle.client:
                    self._idle[-1].since = idle.since
        return dropped


class BlockingReadPool(ClientPool):
    """Clients for blocking reads (``XREAD BLOCK``).

    redis-py 8 defaults ``socket_timeout`` to 5 s, which kills a longer ``BLOCK``; these
    connections wait without a socket timeout and rely on TCP keepalive instead.
    """

    connection_options = {"socket_timeout": None, "socket_keepalive": True}

