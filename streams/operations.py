"""Stream services: every interface (API, admin, commands, hub) goes through these.

Each function borrows one client from this loop's main pool and makes one round trip, except
where noted.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ResponseError

from monitoring.operations import timed
from monitoring.prometheus import EVENTS_PUBLISHED

from streams.broadcast import announce_deleted
from streams.clients import redis_context
from streams.names import validate_stream_name
from streams.positions import last_generated_id
from streams.registry import RegistryPage
from streams.scripts import run_safe_range_script, run_stream_info_script


@dataclass(frozen=True)
class StreamInfo:
    name: str
    length: int
    first_id: str | None
    last_id: str | None


@dataclass(frozen=True)
class StreamEntry:
    id: str
    data: dict[str, str]


def stream_key(prefix: str, name: str) -> str:
    return prefix + name


async def _one_command_per_stream(names: list[str], command: str, *, raise_on_error: bool = True) -> list:
    """``command`` on each stream's key, pipelined (not a transaction): one round trip."""
    ctx = await redis_context()
    prefix = ctx.config.stream_key_prefix
    async with ctx.main.client() as r:
        async with r.pipeline(transaction=False) as pipe:
            for name in names:
                getattr(pipe, command)(stream_key(prefix, name))
            return await pipe.execute(raise_on_error=raise_on_error)


@timed("publish")
async def stream_publish(*, name: str, entries: list[dict[str, str]]) -> list[str]:
    """Append entries (already encoded) in one transaction; register the stream. Returns ids.

    Trims approximately to STREAM_MAXLEN. A brand-new stream costs a second round trip to
    bump the registry version, so other processes see it at their next listing.
    """
    validate_stream_name(name)
    ctx = await redis_context()
    cfg = ctx.config
    key = stream_key(cfg.stream_key_prefix, name)
    trim = {"maxlen": cfg.stream_maxlen, "approximate": True} if cfg.stream_maxlen else {}
    async with ctx.main.client() as r:
        async with r.pipeline(transaction=True) as pipe:
            for fields in entries:
                pipe.xadd(key, fields, **trim)
            pipe.sadd(ctx.registry.set_key, name)
            *ids, added = await pipe.execute()
        if added:
            await r.incr(ctx.registry.version_key)
    if added:
        ctx.registry.forget_cache()
    EVENTS_PUBLISHED.inc(len(ids))
    return ids


@timed("stream_info_batch")
async def stream_info_batch(*, names: list[str]) -> dict[str, StreamInfo | None]:
    """Length and first/last id for many streams: one XINFO STREAM each, one round trip."""
    if not names:
        return {}
    replies = await _one_command_per_stream(names, "xinfo_stream", raise_on_error=False)
    result: dict[str, StreamInfo | None] = {}
    for name, reply in zip(names, replies):
        if isinstance(reply, ResponseError):
            if _is_missing_or_wrong_type(reply):
                result[name] = None
                continue
            raise reply
        result[name] = _info_from_xinfo(name, reply)
    return result


def _is_missing_or_wrong_type(error: ResponseError) -> bool:
    text = str(error).lower()
    return "no such key" in text or "wrongtype" in text


def _info_from_xinfo(name: str, reply: dict) -> StreamInfo:
    first = reply.get("first-entry")
    last = reply.get("last-entry")
    return StreamInfo(
        name=name,
        length=int(reply["length"]),
        first_id=first[0] if first else None,
        last_id=last[0] if last else None,
    )


@timed("script_stream_info")
async def stream_info(*, name: str) -> StreamInfo | None:
    """One stream's info through the seed's atomic Lua script; None when missing."""
    ctx = await redis_context()
    async with ctx.main.client() as r:
        reply = await run_stream_info_script(r, stream_key(ctx.config.stream_key_prefix, name))
    if reply is None:
        return None
    length, first_id, last_id = reply
    return StreamInfo(name=name, length=int(length), first_id=first_id, last_id=last_id)


@timed("range_read")
async def stream_range(
    *, name: str, start: str = "-", end: str = "+", count: int | None = 100
) -> list[StreamEntry] | None:
    """Entries between two ids (inclusive, ``(`` for exclusive); None when the stream is missing."""
    ctx = await redis_context()
    async with ctx.main.client() as r:
        reply = await run_safe_range_script(
            r, stream_key(ctx.config.stream_key_prefix, name), start, end, count
        )
    if reply is None:
        return None
    return [StreamEntry(id=entry_id, data=_pairs_to_dict(fields)) for entry_id, fields in reply]


def _pairs_to_dict(fields) -> dict[str, str]:
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2]))


@timed("latest_read")
async def stream_latest(*, name: str, count: int = 20) -> list[StreamEntry] | None:
    """The newest ``count`` entries, newest first; None when the stream is missing."""
    ctx = await redis_context()
    key = stream_key(ctx.config.stream_key_prefix, name)
    async with ctx.main.client() as r:
        async with r.pipeline(transaction=False) as pipe:
            pipe.exists(key)
            pipe.xrevrange(key, "+", "-", count=count)
            exists, reply = await pipe.execute()
    if not exists:
        return None
    return [StreamEntry(id=entry_id, data=_pairs_to_dict(fields)) for entry_id, fields in reply]


@timed("exists")
async def streams_exist(*, names: list[str]) -> dict[str, bool]:
    """Whether each name is a stream (TYPE per key, one round trip)."""
    if not names:
        return {}
    types = await _one_command_per_stream(names, "type")
    return {name: kind == "stream" for name, kind in zip(names, types)}


@timed("delete")
async def streams_delete(*, names: list[str]) -> int:
    """Delete streams and unregister them in one transaction. Returns how many existed.

    Live listeners of those streams, in every process, get a ``deleted`` event.
    """
    if not names:
        return 0
    ctx = await redis_context()
    prefix = ctx.config.stream_key_prefix
    unique = list(dict.fromkeys(names))
    async with ctx.main.client() as r:
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(*(stream_key(prefix, n) for n in unique))
            pipe.srem(ctx.registry.set_key, *unique)
            pipe.incr(ctx.registry.version_key)
            deleted, _, _ = await pipe.execute()
    ctx.registry.forget_cache()
    if deleted:
        await announce_deleted(unique, ctx.hub)
    return int(deleted)


async def streams_list(*, prefix: str = "", limit: int = 100, offset: int = 0) -> RegistryPage:
    """A page of stream names from the registry (never a SCAN)."""
    ctx = await redis_context()
    return await ctx.registry.page(prefix=prefix, limit=limit, offset=offset)


@timed("stream_last_id")
async def stream_last_id(*, name: str) -> str:
    """The stream's last-generated-id (what ``$`` would mean now), or ``0-0`` when missing."""
    ctx = await redis_context()
    async with ctx.main.client() as r:
        return await last_generated_id(r, stream_key(ctx.config.stream_key_prefix, name))
