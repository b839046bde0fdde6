"""Stream positions: concrete ids to read after."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

START = "0-0"  # before the first possible entry


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def last_generated_id(client: Redis, key: str) -> str:
    """What ``$`` would mean right now, as a concrete id; ``0-0`` for a missing stream."""
    try:
        info = await client.xinfo_stream(key)
    except ResponseError as exc:
        text = str(exc).lower()
        if "no such key" in text or "wrongtype" in text:
            return START
        raise
    return info.get("last-generated-id") or START
