"""The registry of stream names: a Redis SET per bucket kept by our writers, cached in-process.

Listing never SCANs on the request path. Our own publish/delete update the stream's bucket's SET
in the same script as the write and bump that bucket's version counter (every key of a bucket
shares one cluster slot: streams/store/keys.py); a listing costs one GET per bucket (one pipeline per
node) while the in-process copy is younger than REDIS_REGISTRY_CACHE_EXPIRY, and re-reads only
the buckets that changed. A background reconcile (``SCAN MATCH <prefix>{b*}:* TYPE stream`` on
every primary) every REDIS_REGISTRY_REFRESH_INTERVAL picks up streams created or deleted behind
our back.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass

from streams.access.rules import Reader
from streams.core.aio import cancel_and_wait
from streams.core.instruments import timed
from streams.engine.config import RedisConfig
from streams.engine.nodes import NodeMap
from streams.store.keys import key_layout
from streams.store.names import NAME_RE
from streams.store.scripts import registered as script

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryPage:
    count: int
    names: list[str]


FILTER_CACHE_ENTRIES = 1000


# One bucket's registry: KEYS = [names, version, access, then per stream: its key, its meta key];
# ARGV = the streams' names, in the same order. Every key is declared and lives in the bucket's
# slot (streams/store/keys.py).

# Remove names whose key is no longer a stream; bump the version if any went.
UNREGISTER_MISSING_LUA = """
local removed = 0
for i = 1, #ARGV do
  if redis.call('TYPE', KEYS[2 + 2 * i])['ok'] ~= 'stream' then
    removed = removed + redis.call('SREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
if removed > 0 then redis.call('INCR', KEYS[2]) end
return removed
"""

# Register streams found by the reconcile SCAN, each only if its key is still a stream at this
# moment (a delete may have run since the SCAN saw it), with its owner when its metadata
# survived (a device deleted and re-created the key itself).
REGISTER_FOUND_LUA = """
local added = 0
for i = 1, #ARGV do
  if redis.call('TYPE', KEYS[2 + 2 * i])['ok'] == 'stream' then
    added = added + redis.call('SADD', KEYS[1], ARGV[i])
    local meta = redis.call('HMGET', KEYS[3 + 2 * i], 'owner', 'visibility')
    if meta[1] or meta[2] then
      redis.call('HSET', KEYS[3], ARGV[i], (meta[2] or '') .. '|' .. (meta[1] or ''))
    end
  end
end
if added > 0 then redis.call('INCR', KEYS[2]) end
return added
"""


def _parse_access(value: str) -> tuple[str | None, int | None]:
    visibility, _, owner = value.partition("|")
    return visibility or None, int(owner) if owner else None


class StreamRegistry:
    def __init__(self, *, nodes: NodeMap, config: RedisConfig) -> None:
        self._nodes = nodes
        self._keys = key_layout(config)
        self._buckets = [self._keys.registry(b) for b in range(config.buckets)]
        self._expiry = config.registry_cache_expiry_ms / 1000
        self._interval = config.registry_refresh_interval_ms / 1000
        self._names: list[str] = []
        self._access: dict[str, tuple[str | None, int | None]] = {}
        self._per_bucket: list[tuple[list[str], dict[str, str]]] = [([], {}) for _ in self._buckets]
        self._filtered: dict[Hashable, list[str]] = {}
        self._versions: list[str | None] = [None] * len(self._buckets)
        self._fetched_at = float("-inf")
        self._task: asyncio.Task | None = None

    def write_keys(self, bucket: int) -> list[str]:
        """The keys a stream write script keeps in step: the bucket's set, version, access index."""
        return self._buckets[bucket].as_list()

    # --- lifecycle (the reconcile task is ours) ------------------------------------------------
    @classmethod
    def of(cls, ctx) -> "StreamRegistry":
        """``ctx``'s registry (its refresh starts with the context: streams/apps.py)."""
        return ctx.part(cls, lambda: cls._made_for(ctx))

    @classmethod
    def _made_for(cls, ctx) -> "StreamRegistry":
        registry = cls(nodes=ctx.nodes, config=ctx.config)
        ctx.on_close(registry.close)
        ctx.on_streams_changed(lambda names, deleted: registry.forget_cache())
        return registry

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
        """All names, sorted: from the in-process copy while every bucket's version is current
        (``_versions_now``); buckets whose version moved are read again."""
        fresh = time.monotonic() - self._fetched_at < self._expiry
        if fresh:
            versions = await self._versions_now()
            stale = [b for b, version in enumerate(versions) if (version or "0") != self._versions[b]]
        else:
            stale = list(range(len(self._buckets)))
        if not stale:
            return self._names
        await self._fetch(stale)
        return self._names

    async def _versions_now(self) -> list[str | None]:
        """Every bucket's version: one MGET on a single Redis (one command instead of a
        pipeline of 16: the list's request path, docs/benchmarks.md (x)); on a cluster, whose
        buckets live in different slots, one pipeline of GETs per node."""
        version_keys = [k.version for k in self._buckets]
        if not self._nodes.cluster:
            return await self._nodes.run(version_keys[0], lambda r: r.mget(version_keys))
        replies = await self._nodes.pipelined(version_keys, lambda pipe, b: pipe.get(version_keys[b]))
        return [version for (version,) in replies]

    async def _fetch(self, buckets: list[int]) -> None:
        """Read these buckets' names and access index. The version is read first: a write in
        between leaves an older version beside newer names, which the next call reads again."""
        def queue(pipe, i):
            keys = self._buckets[buckets[i]]
            pipe.get(keys.version)
            pipe.smembers(keys.names)
            pipe.hgetall(keys.access)

        replies = await self._nodes.pipelined([self._buckets[b].names for b in buckets], queue)
        for bucket, (version, members, access) in zip(buckets, replies):
            self._versions[bucket] = version or "0"
            self._per_bucket[bucket] = (list(members), access)
        names: list[str] = []
        access_all: dict[str, str] = {}
        for members, access in self._per_bucket:
            names += members
            access_all.update(access)
        self._store(sorted(names), access_all)

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

    def _store(self, names: list[str], access: dict[str, str]) -> None:
        self._names = names
        self._access = {name: _parse_access(value) for name, value in access.items()}
        self._filtered = {}
        self._fetched_at = time.monotonic()

    # --- writes by our own services --------------------------------------------------------
    def forget_cache(self) -> None:
        """Our own write changed the set: the next read fetches it again."""
        self._fetched_at = float("-inf")

    async def _in_bucket(self, source: str, bucket: int, names: list[str]) -> int:
        """One of the scripts above over ``names`` (all of ``bucket``)."""
        keys = self.write_keys(bucket)
        for name in names:
            stream = self._keys.stream_keys(name)
            keys += (stream.stream, stream.meta)
        return int(await self._nodes.run(keys[0], lambda r: script(source)(keys=keys, args=names, client=r)))

    @timed("registry_refresh")
    async def reconcile(self) -> tuple[int, int]:
        """Make every bucket's SET match the keyspace. Returns (added, removed).

        Race-safe against our own writers: the SETs are read *before* the SCAN, so a stream
        published during the scan is never a removal candidate; a candidate is removed only if
        its key still is not a stream, and a found stream is added only if its key still is one
        (both checked inside Redis, so a delete during the scan is not undone). On a cluster
        every primary is scanned."""
        known_replies = await self._nodes.pipelined(
            [k.names for k in self._buckets], lambda pipe, b: pipe.smembers(self._buckets[b].names)
        )
        known = {b: set(reply[0]) for b, reply in enumerate(known_replies)}
        found: dict[int, set[str]] = {b: set() for b in range(len(self._buckets))}
        for node in self._nodes.nodes():
            async with node.main.client() as r:
                async for key in r.scan_iter(match=self._keys.scan_pattern, count=1000, _type="stream"):
                    name = self._keys.name_of(key)
                    if name is not None and NAME_RE.match(name):  # keys no stream name can reach are left alone
                        found[self._keys.bucket(name)].add(name)
        added = removed = 0
        for bucket in range(len(self._buckets)):
            if found[bucket] - known[bucket]:
                added += await self._in_bucket(REGISTER_FOUND_LUA, bucket, sorted(found[bucket] - known[bucket]))
            if known[bucket] - found[bucket]:
                removed += await self._in_bucket(UNREGISTER_MISSING_LUA, bucket, sorted(known[bucket] - found[bucket]))
        if added or removed:
            self.forget_cache()
        return added, removed
