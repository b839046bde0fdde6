"""Markers on a ride (docs/rides.md): a rider or coach marks a moment ("interval 1"), the
stream gets a marker entry ``{"_marker": label, "_ride_s": ride second}`` so every process and
a late joiner see the same markers, the live chart draws them and the archived workout's laps
start at them.

The ride second is ride time as the live metrics count it (``EntryReader``: seconds since the
ride's first sample, by the samples' ``t`` or else their entry ids): the ride time of the
stream's newest sample plus the time since that sample's entry arrived, by Redis' clock (the
marker script adds it), so a marker set while the rider's device is buffering, or set on a
ride whose samples run in faster-than-real time (a simulation), still lands at "now" of the
ride. A stream without a sample yet puts its markers at ride second 0.
"""

from __future__ import annotations

from streams.access import rules
from streams.access.identity import AccessError, Identity
from streams.store import services as store
from workouts.rides.archive import EntryReader
from workouts.rides.states import entry_ms

CLOCK_SCAN = 50  # entries read at each end of the stream to find its first and newest samples


class RideEnded(Exception):
    """A marker on a ride that ended (409)."""

    def __init__(self, name: str) -> None:
        self.detail = f"stream {name!r} is in state ended: a ride that ended takes no more markers"
        super().__init__(self.detail)


async def ride_clock(name: str) -> tuple[int, int] | None:
    """(ride time in ms at the stream's newest sample, that entry's ms), None before any sample.
    Reads ``CLOCK_SCAN`` entries at each end: a sample beyond them (a run of that many entries
    that are no samples) is not looked for; the first sample's clock stands in."""
    reader = EntryReader()
    first = None
    for entry in await store.stream_range(name=name, start="-", end="+", count=CLOCK_SCAN) or ():
        if (sample := reader.sample(entry.id, entry.data)) is not None:
            first = (sample["t"], entry.id)
            break
    if first is None:
        return None
    first_t, first_id = first
    for entry in await store.stream_latest(name=name, count=CLOCK_SCAN) or ():  # newest first
        t = reader.time_of(entry.id, entry.data)
        if t is not None and t >= first_t:
            return round((t - first_t) * 1000), entry_ms(entry.id)
    return 0, entry_ms(first_id)


async def _marked_stream(ident: Identity, name: str) -> store.StreamInfo:
    info = (await store.stream_info_batch(names=[name]))[name]
    if info is None:
        raise AccessError(404, f"stream {name!r} not found")
    rules.check_mark(ident, name, info.meta)
    return info


async def ride_mark(*, ident: Identity, name: str, label: str) -> store.Marker:
    """Add a marker at the ride's current second, if the caller may (``rules.check_mark``).
    Raises AccessError, ``RideEnded``, ``store.TooManyMarkers``."""
    info = await _marked_stream(ident, name)
    if info.meta.ended_ms is not None:
        raise RideEnded(name)
    clock = await ride_clock(name)
    try:
        return await store.stream_mark(name=name, label=label, owner_id=info.meta.owner_id, clock=clock)
    except store.StreamEnded:
        raise RideEnded(name) from None
    except store.WriteRefused as exc:  # it changed hands since the check: decide again
        rules.check_mark(ident, name, exc.meta)
        raise AccessError(409, f"stream {name!r} changed hands meanwhile: try again") from None
    except LookupError:
        raise AccessError(404, f"stream {name!r} not found") from None


async def ride_markers(*, ident: Identity, name: str) -> list[store.Marker]:
    """The markers of a ride the caller may read (404 otherwise)."""
    info = (await store.stream_info_batch(names=[name]))[name]
    if info is None:
        raise AccessError(404, f"stream {name!r} not found")
    rules.check_read(ident, name, info.meta)
    return await store.stream_markers(name=name)
