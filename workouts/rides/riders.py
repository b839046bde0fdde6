"""Simulated riders published live: one ride into one stream (``simulate_ride``), or a group
ride of several riders in one event loop (``demo_ride``). The ride itself is
``workouts.rides.simulate.simulate_ride``; this module publishes it in ride time, sets the
stream's FTP, and ends the ride the way docs/rides.md defines it."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streams.access.identity import Actor
from streams.store import services as store

FAST_BATCH = 100  # entries a publish at --speedup 0 (as fast as possible)


@dataclass
class SimulatedRider:
    """One rider: the stream, who publishes, the ride's arrays and how fast to replay them."""

    stream: str
    actor: Actor
    ride: dict[str, np.ndarray]
    speedup: float
    published: int = 0
    last: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(self.ride["t"].size)

    @property
    def ride_time(self) -> float:
        """Ride seconds published so far."""
        return float(self.ride["t"][self.published - 1]) if self.published else 0.0

    def entries(self, start: int, stop: int) -> list[dict[str, str]]:
        channels = [k for k in self.ride if k != "t"]
        out = []
        for i in range(start, stop):
            fields = {"t": f"{self.ride['t'][i]:.3f}"}
            for name in channels:
                value = self.ride[name][i]
                if not math.isnan(value):
                    fields[name] = f"{value:g}"
            out.append(fields)
        return out


async def stream_prepare(*, rider: SimulatedRider, ftp: int | None, visibility: str | None = None,
                         plan: int | None = None) -> None:
    """Create the stream (owned by the rider's actor, if a user) or set its FTP, visibility and
    workout plan, so the live metrics show IF, TSS, the zones and the plan's compliance. Raises
    ``store.WriteRefused``."""
    if ftp is not None or visibility is not None or plan is not None:
        await store.stream_settings_update(
            name=rider.stream, actor=rider.actor, visibility=visibility, ftp="" if ftp is None else ftp,
            plan="" if plan is None else plan,
        )


async def rider_publish(rider: SimulatedRider, progress: Callable[[SimulatedRider, int], None] | None = None) -> None:
    """Publish the whole ride in ride time divided by ``speedup`` (0: as fast as possible)."""
    batch = FAST_BATCH if rider.speedup == 0 else 1
    start = time.monotonic()
    for i in range(0, rider.total, batch):
        if rider.speedup:
            due = start + float(rider.ride["t"][i]) / rider.speedup
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        entries = rider.entries(i, min(i + batch, rider.total))
        await store.stream_publish(name=rider.stream, entries=entries, actor=rider.actor)
        rider.published += len(entries)
        rider.last = entries[-1]
        if progress is not None:
            progress(rider, len(entries))


async def ride_end(*, name: str, actor: Actor) -> None:
    """End the ride explicitly (docs/rides.md: the end marker, as ``POST
    /api/streams/{name}/end`` does)."""
    await store.stream_end(name=name, actor=actor)


def eta_text(duration_s: float, speedup: float) -> str:
    """'about 6 min' for a ride of ``duration_s`` at ``speedup``; 'as fast as possible' at 0."""
    if speedup == 0:
        return "as fast as possible"
    return f"about {clock(duration_s / speedup)}"


def clock(seconds: float) -> str:
    """Ride time as h:mm:ss, or m:ss under an hour."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
