"""Stream positions: concrete ids to read after."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

START = "0-0"  # before the first possible entry


def id_order(entry_id: str) -> int:
    """An entry id as one int that sorts as Redis orders ids (``ms`` then ``seq``). An int, not
    a ``(ms, seq)`` tuple: a listener keeps its positions in a dict, and a tuple stored in it
    would make the dict a container the garbage collector examines after every delivery."""
    ms, _, seq = entry_id.partition("-")
    return int(ms) << 64 | int(seq or 0)


async def last_generated_id(client: Redis, key: str) -> str:
    """What ``$`` would mean right now, as a concrete id; ``0-0`` for a missing stream.

    The newest entry's id, by ``XREVRANGE + - COUNT 1``: reading after it misses nothing that
    ``$`` would deliver (ids deleted or trimmed past it never come back). Unlike ``XINFO
    STREAM``, a missing key is an empty reply, not an error — listeners often connect before
    the ride starts, and each error left a traceback cycle for the garbage collector."""
    try:
        newest = await client.xrevrange(key, "+", "-", count=1)
    except ResponseError as exc:
        if "wrongtype" in str(exc).lower():
            return START
        raise
    if not newest:
        return START
    entry_id = newest[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
