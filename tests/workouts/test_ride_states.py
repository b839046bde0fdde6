"""The states of a ride (docs/rides.md): one function decides them from the stream's info,
its metadata and the clock."""

import pytest

from streams.store.services import StreamInfo, StreamMeta
from workouts.rides.states import ended_reason, entry_ms, ride_state

NOW = 1_800_000_000_000
SECOND = 1000


def info(last_ago_ms: int | None, *, ended_ms: int | None = None, reason: str | None = None) -> StreamInfo:
    last_id = None if last_ago_ms is None else f"{NOW - last_ago_ms}-0"
    meta = StreamMeta(owner_id=1, ended_ms=ended_ms, ended_reason=reason)
    return StreamInfo(name="ride", length=0 if last_id is None else 5, first_id=last_id, last_id=last_id, meta=meta)


STATES = [
    ("no stream", None, "deleted", None),
    ("a stream with no entry", info(None), "waiting", None),
    ("an entry just now", info(0), "live", None),
    ("the last entry 9.999 s ago", info(10 * SECOND - 1), "live", None),
    ("the last entry RIDE_STALE_AFTER ago", info(10 * SECOND), "stale", None),
    ("the last entry 9 minutes ago", info(540 * SECOND), "stale", None),
    ("the last entry RIDE_IDLE_END ago", info(600 * SECOND), "ended", "idle"),
    ("an end marker a second ago", info(SECOND, ended_ms=NOW - SECOND, reason="owner"), "ended", "owner"),
    ("an idle end written by the janitor", info(700 * SECOND, ended_ms=NOW, reason="idle"), "ended", "idle"),
    ("an end before any entry", info(None, ended_ms=NOW, reason="owner"), "ended", "owner"),
]


@pytest.mark.parametrize("what,stream,state,reason", STATES, ids=[s[0] for s in STATES])
def test_the_state_of_a_ride_follows_the_table_of_docs_rides(what, stream, state, reason):
    assert ride_state(stream, now=NOW) == state
    assert ended_reason(stream, now=NOW) == reason


def test_the_thresholds_come_from_the_settings(settings):
    settings.RIDE_STALE_AFTER_MS = 100
    settings.RIDE_IDLE_END_MS = 1000
    assert [ride_state(info(ago), now=NOW) for ago in (99, 100, 999, 1000)] == ["live", "stale", "stale", "ended"]


def test_an_entry_is_as_old_as_the_time_in_its_id():
    assert entry_ms("1700000000123-7") == 1700000000123
    assert entry_ms(None) is None
