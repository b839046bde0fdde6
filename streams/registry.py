"""The registry of stream names: a Redis SET kept by our writers, cached in-process.

Listing never SCANs on the request path. Our own publish/delete update the SET in the same
transaction as the write and bump a version counter; a listing costs one GET of that counter
while the in-process copy is younger than REDIS_REGISTRY_CACHE_EXPIRY, and one SMEMBERS
otherwise. A background reconcile (``SCAN MATCH <prefix>* TYPE stream``) every
REDIS_REGISTRY_REFRESH_INTERVAL picks up streams created or deleted behind our back.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from monitoring.operations import timed
from streamsite.envconfig import RedisConfig
from streams.keys import stream_key, stream_keys
from streams.names import NAME_RE
from streams.pool import ClientPool
from streams.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryPage:
    count: int
    names: list[str]


@dataclass(frozen=True)
class Reader:
    """Who lists: ``may_read(owner_id, visibility)`` decides per stream (owner_id and
    visibility None for a stream nobody owns); ``key`` names the decision, so the filtered
    list is computed once per registry version for everyone who decides alike."""

    key: Hashable
    may_read: Callable[[int | None, str | None], bool]


FILTER_CACHE_ENTRIES = 1000


# Remove names whose key is no longer a stream; bump the version if any went.
# ARGV: name, stream key, name, stream key, ...
UNREGISTER_MISSING_LUA = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('TYPE', ARGV[i + 1])['ok'] ~= 'stream' then
    removed = removed + redis.call('SREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
if removed > 0 then redis.call('INCR', KEYS[2]) end
return removed
"""


# Register streams found by the reconcile SCAN, each only if its key is still a stream at this
# moment (a delete may have run since the SCAN saw it), with its owner when its metadata
# survived (a device deleted and re-created the key itself). ARGV: name, stream key, meta key, ...
REGISTER_FOUND_LUA = """
local added = 0
for i = 1, #ARGV, 3 do
  if redis.call('TYPE', ARGV[i + 1])['ok'] == 'stream' then
    added = added + redis.call('SADD', KEYS[1], ARGV[i])
    local meta = redis.call('HMGET', ARGV[i + 2], 'owner', 'visibility')
    if meta[1] or meta[2] then
      redis.call('HSET', KEYS[3], ARGV[i], (meta[2] or '') .. '|' .. (meta[1] or ''))
    end
  end
end
if added > 0 then redis.call('INCR', KEYS[2]) end
return added
"""


def registry_keys(prefix: str) -> tuple[str, str, str]:
    """The SET of names, its version counter, and the access index (name → "visibility|owner
    id", for owned streams: listing filters by it without a read per stream). '_' cannot
    start a valid stream name."""
    return f"{prefix}_registry", f"{prefix}_registry:version", f"{prefix}_registry:access"


def _parse_access(value: str) -> tuple[str | None, int | None]:
    visibility, _, owner = value.partition("|")
    return visibility or None, int(owner) if owner else None


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class StreamRegistry:
    def __init__(self, *, pool: ClientPool, config: RedisConfig) -> None:
        self._pool = pool
        self._prefix = config.stream_key_prefix
        self._set_key, self._version_key, self._access_key = registry_keys(self._prefix)
        self._expiry = config.registry_cache_expiry_ms / 1000
        self._interval = config.registry_refresh_interval_ms / 1000
        self._names: list[str] = []
        self._access: dict[str, tuple[str | None, int | None]] = {}
        self._filtered: dict[Hashable, list[str]] = {}
        self._version: str | None = None
        self._fetched_at = float("-inf")
        self._task: asyncio.Task | None = None
        self.last_reconcile_at: float | None = None

    @property
    def set_key(self) -> str:
        return self._set_key

    @property
    def version_key(self) -> str:
        return self._version_key

    def write_keys(self) -> list[str]:
        """The keys a stream write script keeps in step: set, version, access index."""
        return [self._set_key, self._version_key, self._access_key]

    # --- lifecycle (the reconcile task is ours) ------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._reconcile_forever(), name="stream-registry-reconcile"
            )

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: try again next interval
                log.warning("stream registry reconcile failed: %s", exc)
            await asyncio.sleep(self._interval)

    # --- reads -----------------------------------------------------------------------------
    @property
    def cached_names(self) -> list[str]:
        return self._names

    def age_ms(self) -> float | None:
        if self._fetched_at == float("-inf"):
            return None
        return (time.monotonic() - self._fetched_at) * 1000

    @timed("registry_list")
    async def names(self) -> list[str]:
        """All names, sorted: from the in-process copy while its version is current."""
        fresh = time.monotonic() - self._fetched_at < self._expiry
        async with self._pool.client() as r:
            if fresh and self._version is not None:
                if await r.get(self._version_key) == self._version:
                    return self._names
            async with r.pipeline(transaction=True) as pipe:
                pipe.smembers(self._set_key)
                pipe.hgetall(self._access_key)
                pipe.get(self._version_key)
                members, access, version = await pipe.execute()
        self._store(sorted(members), access, version)
        return self._names

    async def page(
        self, *, prefix: str = "", limit: int = 100, offset: int = 0, reader: Reader | None = None
    ) -> RegistryPage:
        names = await self.names()
        if reader is not None:
            names = self._readable(names, reader)
        if prefix:
            lo = bisect.bisect_left(names, prefix)
            hi = bisect.bisect_left(names, prefix + "\U0010ffff")
            names = names[lo:hi]
        return RegistryPage(count=len(names), names=names[offset : offset + limit])

    def _readable(self, names: list[str], reader: Reader) -> list[str]:
        cached = self._filtered.get(reader.key)
        if cached is not None:
            return cached
        no_owner = (None, None)
        access = self._access
        allowed = [n for n in names if reader.may_read(*access.get(n, no_owner)[::-1])]
        if len(self._filtered) >= FILTER_CACHE_ENTRIES:
            self._filtered.clear()
        self._filtered[reader.key] = allowed
        return allowed

    def _store(self, names: list[str], access: dict[str, str], version: str | None) -> None:
        self._names = names
        self._access = {name: _parse_access(value) for name, value in access.items()}
        self._filtered = {}
        self._version = version or "0"
        self._fetched_at = time.monotonic()

    # --- writes by our own services --------------------------------------------------------
    def forget_cache(self) -> None:
        """Our own write changed the set: the next read fetches it again."""
        self._fetched_at = float("-inf")

    async def _register_found(self, r, names: list[str]) -> int:
        """Streams written behind our back (see REGISTER_FOUND_LUA). Returns how many."""
        args = []
        for name in names:
            keys = stream_keys(self._prefix, name)
            args += (name, keys.stream, keys.meta)
        script = r.register_script(REGISTER_FOUND_LUA)
        return int(await script(keys=[self._set_key, self._version_key, self._access_key], args=args, client=r))

    @timed("registry_refresh")
    async def reconcile(self) -> tuple[int, int]:
        """Make the SET match the keyspace. Returns (added, removed).

        Race-safe against our own writers: the SET is read *before* the SCAN, so a stream
        published during the scan is never a removal candidate; a candidate is removed only if
        its key still is not a stream, and a found stream is added only if its key still is one
        (both checked inside Redis, so a delete during the scan is not undone)."""
        found: set[str] = set()
        cut = len(self._prefix)
        async with self._pool.client() as r:
            known = await r.smembers(self._set_key)
            async for key in r.scan_iter(
                match=_glob_escape(self._prefix) + "*", count=1000, _type="stream"
            ):
                if NAME_RE.match(key[cut:]):  # not our own event stream, nor keys no name can reach
                    found.add(key[cut:])
            added = await self._register_found(r, sorted(found - known)) if found - known else 0
            candidates = sorted(known - found)
            removed = 0
            if candidates:
                script = r.register_script(UNREGISTER_MISSING_LUA)
                args = [part for name in candidates for part in (name, stream_key(self._prefix, name))]
                removed = await script(
                    keys=[self._set_key, self._version_key, self._access_key], args=args, client=r,
                )
        self.last_reconcile_at = time.monotonic()
        if added or removed:
            self.forget_cache()
        return added, int(removed)
