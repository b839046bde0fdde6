"""The one definition of a ride's state (docs/rides.md): ``waiting``, ``live``, ``stale``,
``ended`` or ``deleted``, from the stream's info (its last entry id) and metadata (``ended_ms``,
``ended_reason``) and the server's clock. Every page, API and event asks ``ride_state``.

An entry's age is measured from the millisecond time of its id (when Redis stored it).
``RIDE_STALE_AFTER`` without an entry: stale; ``RIDE_IDLE_END``: ended (reason ``idle``),
even before the ride janitor writes the end marker that makes it so for good."""

from __future__ import annotations

import time
from typing import Literal

from django.conf import settings

from streams.store.services import StreamInfo

RideState = Literal["waiting", "live", "stale", "ended", "deleted"]
STATES: tuple[RideState, ...] = ("waiting", "live", "stale", "ended", "deleted")
ENDED_REASONS = ("owner", "idle")


def now_ms() -> int:
    """The server's clock, as the states read it."""
    return int(time.time() * 1000)


def entry_ms(entry_id: str | None) -> int | None:
    """The millisecond time of an entry id (when Redis stored it), None for none."""
    return int(entry_id.split("-", 1)[0]) if entry_id else None


def _idle(last_ms: int | None, now: int) -> bool:
    return last_ms is not None and now - last_ms >= settings.RIDE_IDLE_END_MS


def ride_state(info: StreamInfo | None, *, now: int | None = None) -> RideState:
    """The ride's state at ``now`` (ms since the epoch; default: the server's clock). ``info``
    None: the stream is gone."""
    if info is None:
        return "deleted"
    now = now_ms() if now is None else now
    last_ms = entry_ms(info.last_id)
    if info.meta.ended_ms is not None or _idle(last_ms, now):
        return "ended"
    if last_ms is None:
        return "waiting"
    return "live" if now - last_ms < settings.RIDE_STALE_AFTER_MS else "stale"


def ended_reason(info: StreamInfo | None, *, now: int | None = None) -> str | None:
    """Why the ride ended (``owner``, ``idle``), or None while it has not."""
    if info is None:
        return None
    if info.meta.ended_ms is not None:
        return info.meta.ended_reason or "owner"
    now = now_ms() if now is None else now
    return "idle" if _idle(entry_ms(info.last_id), now) else None
