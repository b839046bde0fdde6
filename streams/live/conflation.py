"""Conflation per reader (``?rate=N``): at most N events per second per stream, each the newest
entry of its interval, saying how many entries it stands for.

A spectator at 1 Hz and a coach at full rate share the process's one hub: the hub queues every
entry for every listener as before, and a rate-limited listener's own loop (``live_batches``)
keeps only the newest entry per stream until that stream's interval has passed. So no second
XREAD, and a held entry is never older than one interval: when the interval closes with no new
entry, a timer wakes the listener's loop and the held entry goes out (no entry stuck waiting for
the next one). The timer is a plain loop callback (``loop.call_later``) that only resolves the
listener's wait future: it belongs to the listener's task, which cancels it after every wait.

The first entry of a quiet stream goes out at once (leading edge); entries arriving within the
interval after it are held, and the newest goes out when the interval closes (trailing edge).
Events of one stream are thus at least ``1/N`` s apart: N s of a busy stream give at most N + 1
events. Each event's id is a real entry id, so it stays a resume point (``Last-Event-ID``):
a resume skips what the conflated events stood for, as a live reader did.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from streams.core.errors import InvalidInput
from streams.live.hub import Entry

RATE_MIN = 0.01  # one event per 100 s per stream
RATE_MAX = 1000.0


@dataclass(frozen=True, slots=True)
class ConflatedEntry(Entry):
    """The newest entry of an interval; ``count``: how many entries it stands for (1: none skipped)."""

    count: int = 1


def parse_rate(value: str | None) -> float | None:
    """``?rate=`` → events per second per stream, or None (every entry). 400 naming ``rate``."""
    if value is None or value == "":
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = math.nan
    if not (RATE_MIN <= rate <= RATE_MAX):  # NaN fails both comparisons
        raise InvalidInput(
            f"invalid rate={value!r}: events per second per stream, a number from {RATE_MIN:g} to {RATE_MAX:g}"
        )
    return rate


class Conflator:
    """One listener's conflation state: per stream, when its last event went out and the newest
    entry held since (with how many it stands for)."""

    __slots__ = ("_held", "_sent_at", "interval")

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._sent_at: dict[str, float] = {}
        self._held: dict[str, tuple[Entry, int]] = {}

    def admit(self, entries: list[Entry], now: float) -> list[ConflatedEntry]:
        """Take new entries (in stream order); returns what goes out now."""
        for entry in entries:
            held = self._held.get(entry.name)
            self._held[entry.name] = (entry, 1 if held is None else held[1] + 1)
        return self.release(now) if self._held else []

    def release(self, now: float, *, everything: bool = False) -> list[ConflatedEntry]:
        """The held entries whose stream's interval has passed (all of them: ``everything``)."""
        out = []
        for name, (entry, count) in list(self._held.items()):
            if everything or now >= self._sent_at.get(name, -math.inf) + self.interval:
                out.append(ConflatedEntry(entry.name, entry.id, entry.pos, entry.data_json, count))
                self._sent_at[name] = now
                del self._held[name]
        return out

    def drop(self, name: str) -> None:
        """Forget the entry held for ``name`` (its stream was reset: it would go out after the
        reset, older than what follows it)."""
        self._held.pop(name, None)

    def due(self) -> float | None:
        """When the next held entry may go out (``time.monotonic()``), None when none is held."""
        if not self._held:
            return None
        return min(self._sent_at.get(name, -math.inf) for name in self._held) + self.interval

    def timer(self, waiter: asyncio.Future) -> asyncio.TimerHandle | None:
        """Resolve ``waiter`` when the next held entry is due; the caller cancels the handle
        after its wait (None: nothing held, no timer)."""
        due = self.due()
        if due is None:
            return None
        return asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()), _resolve, waiter)


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
