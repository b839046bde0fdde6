"""Conflation per reader (``?rate=N``, streams/live/conflation.py) and batched WebSocket frames
(``?batch=1``): what each event stands for, never how fast it came."""

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator

from streams.core.errors import InvalidInput
from streams.engine.context import redis_context
from streams.live.conflation import Conflator, parse_rate
from streams.live.hub import StreamHub, make_entry
from tests.helpers import publish
from tests.streams.sse_client import SSEClient, follow

# Channels closes old database connections at each WebSocket disconnect.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def public_reads(settings):
    settings.STREAMS_PUBLIC_READ = True


async def hub_listening(*names: str) -> None:
    hub = StreamHub.of(await redis_context())
    async with asyncio.timeout(5):
        for name in names:
            await hub.reading(name)


async def data_events(client: SSEClient, until_id: str, *, stream: str | None = None) -> list[dict]:
    """Data events (their JSON) up to and including the one whose entry id is ``until_id``."""
    out = []
    while True:
        (event,) = await client.events(1, timeout=10)
        assert event.event == "message", event
        body = event.json()
        out.append(body)
        if body["id"] == until_id and (stream is None or body.get("stream") == stream):
            return out


# --- the conflator itself, on a clock of the test's own -------------------------------------
def entries(name, first, n):
    return [make_entry(name, f"{first + k}-0", {"i": str(first + k)}) for k in range(n)]


def test_a_quiet_stream_goes_out_at_once_then_the_newest_of_each_interval():
    c = Conflator(rate=2)  # 0.5 s
    (first,) = c.admit(entries("a", 1, 3), now=10.0)
    assert (first.id, first.count) == ("3-0", 3)
    assert c.admit(entries("a", 4, 2), now=10.1) == []  # within the interval: held
    assert c.due() == pytest.approx(10.5)
    assert c.release(10.4) == []
    (trailing,) = c.release(10.5)  # the interval closed with no new entry: the held one goes out
    assert (trailing.id, trailing.count, trailing.data_json) == ("5-0", 2, '{"i": "5"}')
    assert c.due() is None


def test_rate_1_on_a_4_hz_stream_for_60_s_is_at_most_61_events_each_the_newest_of_its_second():
    """The issue's case on the conflator's own clock (the live test below runs 5 s of it in
    real time): 240 entries at 4 Hz, the loop waking at each entry and at each held entry's
    due time, as ``live_batches`` does."""
    c, out, sent_at, k = Conflator(rate=1), [], [], 0
    arrivals = [(i / 4, make_entry("a", f"{1000 + i * 250}-0", {"i": str(i)})) for i in range(240)]
    while k < len(arrivals) or c.due() is not None:
        due = c.due()
        if k < len(arrivals) and (due is None or arrivals[k][0] < due):
            now, entry = arrivals[k]
            sent = c.admit([entry], now)
            k += 1
        else:
            now, sent = due, c.release(due)
        out += sent
        sent_at += [now] * len(sent)
    assert len(out) <= 61
    assert sum(e.count for e in out) == 240  # every entry is stood for, none twice
    stood = 0
    for event in out:
        stood += event.count
        assert event.id == arrivals[stood - 1][1].id  # the newest of what it stands for
    assert all(b - a >= 1 - 1e-9 for a, b in zip(sent_at, sent_at[1:]))  # at most one a second


def test_each_stream_has_its_own_interval():
    c = Conflator(rate=1)
    assert [e.name for e in c.admit(entries("a", 1, 1) + entries("b", 1, 2), now=0.0)] == ["a", "b"]
    assert c.admit(entries("a", 2, 1), now=0.5) == []
    assert c.admit(entries("c", 1, 1), now=0.6)[0].name == "c"  # another stream is not held back
    (a,) = c.release(1.0)
    assert (a.name, a.id, a.count) == ("a", "2-0", 1)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "1001", "0.001"])
def test_a_bad_rate_names_rate(value):
    with pytest.raises(InvalidInput, match="rate"):
        parse_rate(value)


def test_rates_in_range_and_fractions():
    assert parse_rate(None) is None and parse_rate("") is None
    assert parse_rate("0.5") == 0.5 and parse_rate("1000") == 1000


# --- SSE ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/streams/ride/sse?rate=0", "/api/sse?streams=a,b&rate=x"])
async def test_a_bad_rate_is_400_naming_it(r, path):
    c = await SSEClient(path).connect()
    assert c.status == 400
    assert "rate" in (await c.json_body())["detail"]


async def test_rate_1_on_a_4_hz_stream_gives_at_most_one_event_a_second_each_the_newest(r, open_clients):
    """5 s of a 4 Hz stream (20 entries) at ?rate=1: at most 6 events (5 + 1), which together
    stand for every entry, each the newest of those it stands for; the last entry comes
    though nothing follows it (the interval's timer)."""
    seconds, hz = 5, 4
    c = await follow(open_clients, "/api/streams/ride/sse?rate=1")
    await hub_listening("ride")
    ids = []
    for k in range(seconds * hz):  # the workload's pace, not a synchronisation
        ids += await publish("ride", 1, start=k)
        await asyncio.sleep(1 / hz)
    events = await data_events(c, ids[-1])
    assert len(events) <= seconds + 1
    covered = 0
    for event in events:
        covered += event["conflated"]
        assert event["id"] == ids[covered - 1]  # the newest of the entries it stands for
        assert event["data"] == {"i": str(covered - 1)}
    assert covered == len(ids)


async def test_an_entry_held_back_is_sent_when_its_interval_closes(r, open_clients):
    c = await follow(open_clients, "/api/streams/ride/sse?rate=5")
    await hub_listening("ride")
    first = await publish("ride", 3)  # one publish: one read, sent at once as the newest of 3
    assert await data_events(c, first[-1]) == [{"id": first[-1], "data": {"i": "2"}, "conflated": 3}]
    held = await publish("ride", 2, start=3)  # within the interval: held, then sent by its timer
    assert await data_events(c, held[-1]) == [{"id": held[-1], "data": {"i": "4"}, "conflated": 2}]


async def test_multi_stream_rate_is_per_stream_and_ids_resume(r, open_clients):
    c = await follow(open_clients, "/api/sse?streams=a,b&rate=5")
    await hub_listening("a", "b")
    a1 = await publish("a", 3)
    b1 = await publish("b", 2)
    got = await data_events(c, b1[-1], stream="b")
    assert [(e["stream"], e["id"], e["conflated"]) for e in got] == [("a", a1[-1], 3), ("b", b1[-1], 2)]
    a2 = await publish("a", 4, start=3)
    (event,) = await c.events(1, timeout=10)
    assert (event.json()["id"], event.json()["conflated"]) == (a2[-1], 4)
    assert event.id.startswith(f"{a2[-1]},{b1[-1]}~")  # the composite id: each stream's newest sent


async def test_without_rate_the_events_are_unchanged(r, open_clients):
    c = await follow(open_clients, "/api/streams/ride/sse")
    await hub_listening("ride")
    ids = await publish("ride", 2)
    events = await c.events(2)
    assert [e.id for e in events] == ids and [e.json() for e in events] == [{"i": "0"}, {"i": "1"}]


# --- WebSocket -------------------------------------------------------------------------------
async def open_ws(app, sockets, path):
    ws = WebsocketCommunicator(app, path)
    connected, _ = await ws.connect()
    assert connected
    sockets.append(ws)
    return ws


async def frames_until(ws, last_id: str) -> list:
    out = []
    while True:
        frame = json.loads(await ws.receive_from(10))
        out.append(frame)
        items = frame if isinstance(frame, list) else [frame]
        if any(item.get("id") == last_id for item in items):
            return out


@pytest.mark.parametrize("query,needle", [("rate=0", "rate"), ("batch=yes", "batch")])
async def test_bad_websocket_parameters_are_refused_naming_them(app, sockets, query, needle):
    ws = await open_ws(app, sockets, f"/ws/streams/ride/?{query}")
    assert needle in (await ws.receive_json_from(5))["error"]
    assert (await ws.receive_output(5))["code"] == 4400


async def test_batched_frames_carry_exactly_the_entries_in_order(app, sockets, r):
    history = await publish("ride", 1200)  # catch-up: chunks of 500
    ws = await open_ws(app, sockets, "/ws/streams/ride/?batch=1&from=start")
    frames = await frames_until(ws, history[-1])
    assert all(isinstance(f, list) for f in frames)
    assert len(frames) < len(history)
    assert [e["id"] for f in frames for e in f] == history
    assert frames[0][0] == {"id": history[0], "data": {"i": "0"}}
    await hub_listening("ride")
    live = await publish("ride", 5, start=1200)  # one publish, one read, one wake-up: one frame
    assert await frames_until(ws, live[-1]) == [[{"id": i, "data": {"i": str(1200 + k)}} for k, i in enumerate(live)]]


async def test_websocket_rate_sends_the_newest_with_its_count(app, sockets, r):
    ws = await open_ws(app, sockets, "/ws/streams/ride/?rate=5")
    await hub_listening("ride")
    first = await publish("ride", 3)
    assert json.loads(await ws.receive_from(5)) == {"id": first[-1], "data": {"i": "2"}, "conflated": 3}
    held = await publish("ride", 2, start=3)
    assert json.loads(await ws.receive_from(5)) == {"id": held[-1], "data": {"i": "4"}, "conflated": 2}


async def test_websocket_rate_and_batch_together(app, sockets, r):
    ws = await open_ws(app, sockets, "/ws/streams/ride/?rate=5&batch=1")
    await hub_listening("ride")
    ids = await publish("ride", 4)
    assert json.loads(await ws.receive_from(5)) == [{"id": ids[-1], "data": {"i": "3"}, "conflated": 4}]
