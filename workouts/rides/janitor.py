"""The ride janitor (docs/rides.md): in each server process, a task that looks over every
stream of the registry now and then, writes the idle end marker of a ride that stopped
(``RIDE_IDLE_END``), and archives each ended ride once as a workout (``RIDE_AUTO_ARCHIVE``),
deleting the archived entries when ``RIDE_ARCHIVED_STREAM=delete``.

- **Once:** at most one process archives a stream: a Redis lock per stream (``SET NX PX``,
  in the stream's slot), and the stream's metadata records ``workout_id`` when it is done (a
  ride with one is never archived again).
- **Owned:** ``RideJanitor.of(ctx)`` belongs to the event loop's ``RedisContext``, which
  cancels and awaits its task at close. It runs only where ``start_ride_janitor`` is
  registered (``streamsite/asgi.py``: server processes, with ``RIDE_JANITOR`` on), never in
  management commands; the context starts at lifespan start-up (uvicorn), so it runs before
  any request.
- **Woken:** a write through this process (an explicit end among them) wakes it for the
  streams written; the scan of every stream comes each ``scan_interval()``.
- **Never dies of an error:** a stream that fails is logged and tried again at the next scan.
- Streams nobody owns (written with ``redis-cli``) are left alone: no end marker, no archive.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model

from streams.core.aio import OwnedTasks
from streams.core.database import database_outage
from streams.store import services as store
from streams.store.registry import StreamRegistry
from workouts.errors import WorkoutInputError
from workouts.rides.archive import archive_stream
from workouts.rides.listing import stream_infos
from workouts.rides.states import now_ms, ride_state

log = logging.getLogger(__name__)

ARCHIVE_LOCK_MS = 10 * 60 * 1000  # longer than any archive takes; kept after one that succeeded
MAX_SCAN_INTERVAL_S = 30.0


def scan_interval() -> float:
    """Seconds between scans: a quarter of RIDE_IDLE_END, at most 30 s, at least 0.1 s."""
    return min(MAX_SCAN_INTERVAL_S, max(0.1, settings.RIDE_IDLE_END_MS / 4000))


def start_ride_janitor(ctx) -> None:
    """``on_context_start`` hook of server processes: the context's janitor, unless
    ``RIDE_JANITOR`` is off."""
    if settings.RIDE_JANITOR:
        RideJanitor.of(ctx).start()


@database_sync_to_async
def _owner(owner_id: int):
    return get_user_model().objects.filter(pk=owner_id).first()


class RideJanitor:
    """One event loop's janitor of rides."""

    @classmethod
    def of(cls, ctx) -> "RideJanitor":
        return ctx.part(cls, lambda: cls._made_for(ctx))

    @classmethod
    def _made_for(cls, ctx) -> "RideJanitor":
        janitor = cls(ctx)
        ctx.on_streams_changed(lambda names, deleted: None if deleted else janitor.wake(names))
        ctx.on_close(janitor.close)
        return janitor

    def __init__(self, ctx) -> None:
        self._ctx = ctx
        self._tasks = OwnedTasks()
        self._woken = asyncio.Event()
        self._named: set[str] = set()  # streams written through this process since the last look
        self._unarchivable: set[str] = set()  # ended rides without a sample: told once, skipped
        self.scans = 0  # completed scans of every stream (for tests and stats)
        self.archived = 0

    def start(self) -> None:
        if not len(self._tasks):
            self._tasks.start(self._run(), name="ride janitor")

    def wake(self, names: list[str]) -> None:
        """Look at ``names`` soon (a write through this process: an end, say)."""
        self._named.update(names)
        self._woken.set()

    async def close(self) -> None:
        await self._tasks.cancel()

    async def _run(self) -> None:
        while True:
            await self._look(await self._all_names())
            self.scans += 1
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        """Until the next scan is due, look at the streams written meanwhile as they come."""
        deadline = asyncio.get_running_loop().time() + scan_interval()
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                await asyncio.wait_for(self._woken.wait(), left)
            except TimeoutError:
                return
            self._woken.clear()
            named, self._named = sorted(self._named), set()
            await self._look(named)

    async def _all_names(self) -> list[str]:
        try:
            return await StreamRegistry.of(self._ctx).names()
        except Exception:
            log.exception("the ride janitor could not list the streams; trying again at the next scan")
            return []

    async def _look(self, names: list[str]) -> None:
        """End and archive what is due among ``names``; errors are logged, never raised."""
        try:
            async for info in stream_infos(names):
                await self._tend(info)
        except Exception:
            log.exception("the ride janitor could not read the streams; trying again at the next scan")

    async def _tend(self, info: store.StreamInfo) -> None:
        if info.meta.owner_id is None:
            return  # a stream nobody owns (written behind the service's back) is no ride it tends
        try:
            if ride_state(info, now=now_ms()) != "ended":
                return
            if info.meta.ended_ms is None and await self._end_idle(info) is None:
                return
            if self._archivable(info):
                await self._archive_once(info)
        except Exception:
            log.exception("the ride janitor failed on stream %r; trying again at the next scan", info.name)

    async def _end_idle(self, info: store.StreamInfo) -> store.RideEnd | None:
        """The idle end marker, unless an entry arrived since ``info`` was read."""
        return await store.stream_end(name=info.name, reason="idle", if_last=info.last_id or "")

    def _archivable(self, info: store.StreamInfo) -> bool:
        return settings.RIDE_AUTO_ARCHIVE and info.meta.workout_id is None and info.name not in self._unarchivable

    async def _archive_once(self, info: store.StreamInfo) -> None:
        holder = self._ctx.origin
        if not await store.archive_lock_take(name=info.name, holder=holder, ttl_ms=ARCHIVE_LOCK_MS):
            return  # another process archives it (or did: its workout_id shows at the next look)
        try:
            await self._archive(info.name)
        except BaseException:
            await store.archive_lock_release(name=info.name, holder=holder)
            raise

    async def _archive(self, name: str) -> None:
        info = (await store.stream_info_batch(names=[name]))[name]
        if info is None or info.meta.owner_id is None or not self._archivable(info):
            return  # deleted, or archived meanwhile
        athlete = await database_outage.through(lambda: _owner(info.meta.owner_id))
        if athlete is None:
            self._skip(name, f"its owner #{info.meta.owner_id} no longer exists")
            return
        try:
            archived = await archive_stream(
                name=name, athlete=athlete, delete_stream=settings.RIDE_ARCHIVED_STREAM == "delete",
                owner_id=info.meta.owner_id,
            )
        except WorkoutInputError as exc:  # no sample at all, say: nothing to archive, ever
            self._skip(name, str(exc))
            return
        self.archived += 1
        log.info(
            "ride %r (%s) archived as workout %d, %d samples%s", name, info.meta.ended_reason or "idle",
            archived.workout.pk, archived.workout.sample_count, ", stream deleted" if archived.stream_deleted else "",
        )

    def _skip(self, name: str, why: str) -> None:
        self._unarchivable.add(name)
        log.info("ride %r ended but is not archived: %s", name, why)
