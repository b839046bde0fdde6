"""Move streams from the key layout before buckets (``<prefix><name>``) to the bucketed one
(``<prefix>{b<N>}:<name>``, streams/store/keys.py). Dry-run unless ``--apply``.

Each stream moves in one Lua script: its entries and metadata are renamed, its registry entry
(name and access index) moves to its bucket's registry, both registries' versions are bumped.
A stream already moved is simply no longer at its old key, so an interrupted run is resumed by
running the command again. A stream whose new key already exists (a device kept XADDing to the
old key after the upgrade, say) is left alone and reported: nothing is overwritten.

Standalone Redis only: the old layout could not run on a Redis Cluster.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from streams.engine.context import (
    close_redis_context,
    redis_context,
    redis_errors_as_command_errors,
)
from streams.store.keys import (
    glob_escape,
    key_layout,
    legacy_registry_keys,
    legacy_stream_keys,
)
from streams.store.names import NAME_RE
from streams.store.registry import StreamRegistry
from streams.store.services import script

# KEYS: old stream, old meta, old names, old access, old version,
#       new stream, new meta, new names, new version, new access. ARGV[1]: the name.
MOVE_ONE_LUA = """
if redis.call('EXISTS', KEYS[6]) == 1 then return 'conflict' end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return 'gone' end
redis.call('RENAME', KEYS[1], KEYS[6])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[7]) end
local access = redis.call('HGET', KEYS[4], ARGV[1])
if not access then
  local meta = redis.call('HMGET', KEYS[7], 'owner', 'visibility')
  if meta[1] or meta[2] then access = (meta[2] or '') .. '|' .. (meta[1] or '') end
end
if access then redis.call('HSET', KEYS[10], ARGV[1], access) end
redis.call('SADD', KEYS[8], ARGV[1])
redis.call('INCR', KEYS[9])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
return 'moved'
"""

SHOWN = 20


class Command(BaseCommand):
    help = (
        "Move streams written before the bucketed key layout (<prefix><name>) to it "
        "(<prefix>{b<N>}:<name>). Dry-run unless --apply; safe to run again (resumes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--apply", action="store_true", help="move the streams (default: only list them)")

    def handle(self, *args, apply: bool, **options):
        with redis_errors_as_command_errors():
            found, moved, conflicts = async_to_sync(self._run)(apply)
        if not apply:
            self.stdout.write(f"{len(found)} streams in the old layout would move"
                              + (f": {', '.join(found[:SHOWN])}{' …' if len(found) > SHOWN else ''}" if found else ""))
            if found:
                self.stdout.write("Run again with --apply to move them.")
            return
        self.stdout.write(f"moved {moved} of {len(found)} streams")
        if conflicts:
            self.stdout.write(f"left alone, both old and new keys exist ({len(conflicts)}): "
                              + ", ".join(conflicts[:SHOWN]) + (" …" if len(conflicts) > SHOWN else ""))
            raise CommandError(f"{len(conflicts)} streams exist in both layouts: merge or delete one key of each, "
                               "then run again")

    async def _run(self, apply: bool) -> tuple[list[str], int, list[str]]:
        try:
            ctx = await redis_context()
            if ctx.nodes.cluster:
                raise CommandError("REDIS_URL names a Redis Cluster: the layout before buckets ran on a standalone "
                                   "Redis only, so there is nothing to move here")
            found = await self._old_streams(ctx)
            if not apply:
                return found, 0, []
            moved, conflicts = 0, []
            with tqdm(total=len(found), unit="stream", disable=None, file=self.stderr) as bar:
                for name in found:
                    outcome = await self._move(ctx, name)
                    if outcome == "moved":
                        moved += 1
                    elif outcome == "conflict":
                        conflicts.append(name)
                    bar.update(1)
            if moved:
                StreamRegistry.of(ctx).forget_cache()
            await self._drop_empty_old_registry(ctx)
            return found, moved, conflicts
        finally:
            await close_redis_context()

    @staticmethod
    async def _old_streams(ctx) -> list[str]:
        prefix = settings.REDIS.stream_key_prefix
        names = []
        async with ctx.nodes.nodes()[0].main.client() as r:
            async for key in r.scan_iter(match=glob_escape(prefix) + "*", count=1000, _type="stream"):
                name = key[len(prefix):]
                if NAME_RE.match(name):  # bucketed keys ({b<N>}:...) and our own keys do not match
                    names.append(name)
        return sorted(names)

    @staticmethod
    async def _drop_empty_old_registry(ctx) -> None:
        old = legacy_registry_keys(settings.REDIS.stream_key_prefix)
        async with ctx.nodes.nodes()[0].main.client() as r:
            if not await r.scard(old.names):
                await r.delete(old.names, old.version, old.access)

    @staticmethod
    async def _move(ctx, name: str) -> str:
        layout = key_layout(settings.REDIS)
        old, new = legacy_stream_keys(layout.prefix, name), layout.stream_keys(name)
        old_registry, new_registry = legacy_registry_keys(layout.prefix), layout.registry(new.bucket)
        keys = [old.stream, old.meta, old_registry.names, old_registry.access, old_registry.version,
                new.stream, new.meta, new_registry.names, new_registry.version, new_registry.access]
        async with ctx.nodes.nodes()[0].main.client() as r:
            return await script(MOVE_ONE_LUA)(keys=keys, args=[name], client=r)
