"""The rides list (``GET /api/rides``, docs/rides.md) and the chunked read of many streams'
info it shares with the ride janitor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from streams.access.rules import Reader
from streams.store import services as store
from workouts.rides.states import ended_reason, entry_ms, now_ms, ride_state

INFO_CHUNK = 500  # streams per stream_info_batch: one round trip per node each
EVERY_NAME = 2**31


@dataclass(frozen=True)
class Ride:
    """One stream as a ride, at one moment."""

    info: store.StreamInfo
    state: str
    ended_reason: str | None

    @property
    def last_entry_ms(self) -> int | None:
        return entry_ms(self.info.last_id)

    @property
    def activity_ms(self) -> int:
        """When something last happened: the last entry, else the stream's creation."""
        return self.last_entry_ms or self.info.meta.created_ms or 0

    def out(self) -> dict:
        meta = self.info.meta
        return {
            "name": self.info.name, "owner": meta.owner, "visibility": meta.visibility, "state": self.state,
            "ended_reason": self.ended_reason, "started_ms": entry_ms(self.info.first_id) or meta.created_ms,
            "last_entry_ms": self.last_entry_ms, "ftp": meta.ftp, "workout_id": meta.workout_id,
        }


def ride_of(info: store.StreamInfo, *, now: int) -> Ride:
    return Ride(info=info, state=ride_state(info, now=now), ended_reason=ended_reason(info, now=now))


async def stream_infos(names: list[str], *, chunk: int = INFO_CHUNK) -> AsyncIterator[store.StreamInfo]:
    """The info of each stream that still exists, ``chunk`` streams a round trip."""
    for start in range(0, len(names), chunk):
        infos = await store.stream_info_batch(names=names[start : start + chunk])
        for info in infos.values():
            if info is not None:
                yield info


async def rides_list(*, reader: Reader | None, states: frozenset[str] | None = None, limit: int = 100) -> tuple[int, list[Ride]]:
    """The rides ``reader`` may read (every stream of the registry's readable list), newest
    activity first, in ``states`` if given: (how many match, the first ``limit``)."""
    page = await store.streams_list(limit=EVERY_NAME, reader=reader)
    now = now_ms()
    rides = [ride_of(info, now=now) async for info in stream_infos(page.names)]
    rides = [ride for ride in rides if states is None or ride.state in states]
    rides.sort(key=lambda ride: (-ride.activity_ms, ride.info.name))
    return len(rides), rides[:limit]
