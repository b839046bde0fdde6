import asyncio
import re

import pytest
from asgiref.sync import sync_to_async

from streams.engine.context import redis_context
from streams.live.deletions import DeletionFeed
from streams.live.follow import live_hub, streams_fingerprint
from streams.live.hub import StreamHub
from streams.store import services as store
from streams.store.keys import key_layout
from streams.store.registry import StreamRegistry
from tests.conftest import kill, our_connections
from tests.helpers import eventually, key, publish
from tests.streams.sse_client import SSEClient, follow


@pytest.fixture(autouse=True)
def public_reads(settings):
    settings.STREAMS_PUBLIC_READ = True


async def wait_for(predicate, timeout=5.0):
    await eventually(predicate, timeout=timeout)


async def assert_nothing_more(client: SSEClient, wait: float = 0.3) -> None:
    """No further event (a duplicate, say) within ``wait`` s; heartbeats are 15 s apart."""
    with pytest.raises(TimeoutError):
        await client.next_event(timeout=wait)


async def hub_listening(name: str) -> None:
    """Wait until the hub reads ``name`` (the subscription is made when streaming starts)."""
    async with asyncio.timeout(5):
        await StreamHub.of(await redis_context()).reading(name)


async def test_live_entries_with_headers_and_retry(r, open_clients):
    c = await follow(open_clients, "/api/streams/ride/sse")
    assert c.status == 200
    assert c.response_headers["content-type"].startswith("text/event-stream")
    assert c.response_headers["cache-control"] == "no-cache"
    assert c.response_headers["x-accel-buffering"] == "no"
    first = await c.next_event()
    assert first.retry == 2000
    await publish("old", 1)
    await hub_listening("ride")
    ids = await publish("ride", 3)
    events = await c.events(3)
    assert [e.id for e in events] == ids
    assert [e.json() for e in events] == [{"i": "0"}, {"i": "1"}, {"i": "2"}]
    assert all(e.event == "message" for e in events)


async def test_default_start_skips_history(r, open_clients):
    await publish("ride", 5)
    c = await follow(open_clients, "/api/streams/ride/sse")
    await hub_listening("ride")
    ids = await publish("ride", 1, start=5)
    (event,) = await c.events(1)
    assert event.id == ids[0]


async def test_from_start_delivers_history_then_live(r, open_clients):
    old = await publish("ride", 3)
    c = await follow(open_clients, "/api/streams/ride/sse?from=start")
    assert [e.id for e in await c.events(3)] == old
    await hub_listening("ride")
    new = await publish("ride", 2, start=3)
    assert [e.id for e in await c.events(2)] == new


async def test_stream_that_does_not_exist_yet_can_be_followed(r, open_clients):
    c = await follow(open_clients, "/api/streams/later/sse")
    await hub_listening("later")
    ids = await publish("later", 2)
    assert [e.id for e in await c.events(2)] == ids


@pytest.mark.parametrize("how", ["header", "query"])
async def test_last_event_id_resumes_after_that_id(r, open_clients, how):
    ids = await publish("ride", 10)
    if how == "header":
        c = await follow(open_clients, "/api/streams/ride/sse", **{"Last-Event-ID": ids[4]})
    else:
        c = await follow(open_clients, f"/api/streams/ride/sse?last_event_id={ids[4]}&from=start")
    assert [e.id for e in await c.events(5)] == ids[5:]
    await assert_nothing_more(c)


async def test_a_resume_into_a_stream_that_is_gone_ends_as_deleted(r, open_clients):
    """Its id can never be caught up with (the stream was deleted behind the service, or
    Redis lost it in a restart without persistence): the end, not a follow that waits for good."""
    ids = await publish("vanished", 3)
    await r.delete(key("vanished"))
    c = await follow(open_clients, "/api/streams/vanished/sse", **{"Last-Event-ID": ids[-1]})
    (event,) = await c.events(1)
    assert event.event == "deleted" and "vanished" in event.data


async def test_last_event_id_wins_over_from_start(r, open_clients):
    ids = await publish("ride", 4)
    c = await follow(open_clients, "/api/streams/ride/sse?from=start", **{"Last-Event-ID": ids[2]})
    assert [e.id for e in await c.events(1)] == ids[3:]


async def test_resume_has_no_gap_and_no_duplicate_while_publishing(r, open_clients, settings):
    """Catch-up (several XRANGE chunks) races live publishing: every entry exactly once, in order."""
    first = await publish("race", 1200)
    total = 3000

    async def producer():
        for k in range(1200, total, 50):
            await publish("race", 50, start=k)
            await asyncio.sleep(0)

    task = asyncio.create_task(producer())
    c = await follow(open_clients, "/api/streams/race/sse", **{"Last-Event-ID": first[0]})
    events = await c.events(total - 1, timeout=10)
    await task
    values = [int(e.json()["i"]) for e in events]
    assert values == list(range(1, total))
    assert len({e.id for e in events}) == total - 1


async def test_heartbeat_comment(r, open_clients, settings):
    settings.SSE_HEARTBEAT_INTERVAL = 50
    c = await follow(open_clients, "/api/streams/quiet/sse")
    assert (await c.next_event()).retry is not None
    assert (await c.next_event(timeout=2)).comment == "ping"


async def test_one_hub_clock_wakes_quiet_listeners_and_stops_with_the_hub(r, open_clients, settings):
    """Heartbeats come from the hub's single clock task, not a timer per listener."""
    from streams.engine.context import redis_context

    settings.SSE_HEARTBEAT_INTERVAL = 50
    clients = [await follow(open_clients, f"/api/streams/quiet-{i}/sse") for i in range(3)]
    for c in clients:
        assert (await c.next_event()).retry is not None
        assert (await c.next_event(timeout=2)).comment == "ping"
    hub = StreamHub.of(await redis_context())
    clock = hub._clock
    assert clock is not None and not clock.done()
    await hub.close()
    assert clock.done()


@pytest.mark.parametrize(
    "path,headers,needle",
    [
        ("/api/streams/ride/sse", {"Last-Event-ID": "yesterday"}, "Last-Event-ID"),
        ("/api/streams/ride/sse?last_event_id=1-2-3", {}, "Last-Event-ID"),
        ("/api/streams/ride/sse?from=end", {}, "from"),
        ("/api/streams/bad%20name/sse", {}, "invalid stream name"),
        ("/api/sse", {}, "streams is required"),
        ("/api/sse?streams=a,a", {}, "twice"),
        ("/api/sse?streams=" + ",".join(f"s{i}" for i in range(51)), {}, "51 streams"),
        ("/api/sse?streams=a,b", {"Last-Event-ID": "1-0"}, "1 positions for 2 streams"),
        ("/api/sse?streams=a,b", {"Last-Event-ID": "1-0,x"}, "Last-Event-ID position"),
    ],
)
async def test_bad_start_is_400_before_streaming(r, path, headers, needle):
    c = await SSEClient(path, headers=headers).connect()
    assert c.status == 400
    assert needle in (await c.json_body())["detail"]


async def test_unowned_streams_are_not_readable_anonymously_when_not_public(r, settings):
    settings.STREAMS_PUBLIC_READ = False
    c = await SSEClient("/api/streams/ride/sse").connect()
    assert c.status == 404


async def test_multi_stream_events_and_composite_resume(r, open_clients):
    c = await follow(open_clients, "/api/sse?streams=a,b&from=start")
    await hub_listening("a")
    await hub_listening("b")
    a_ids = await publish("a", 2)
    b_ids = await publish("b", 1)
    events = await c.events(3)
    assert [(e.json()["stream"], e.json()["id"]) for e in events] == [("a", a_ids[0]), ("a", a_ids[1]), ("b", b_ids[0])]
    assert events[0].json()["data"] == {"i": "0"}
    assert events[1].id == f"{a_ids[1]},0-0~{streams_fingerprint(('a', 'b'))}"
    resume_from = events[1].id  # as if the connection dropped after the 2nd event
    await c.close()
    more_b = await publish("b", 1, start=1)
    c2 = await follow(open_clients, "/api/sse?streams=a,b&from=start", **{"Last-Event-ID": resume_from})
    got = await c2.events(2)
    assert [e.json()["id"] for e in got] == [b_ids[0], more_b[0]]
    assert got[-1].id == f"{a_ids[1]},{more_b[0]}~{streams_fingerprint(('a', 'b'))}"
    await assert_nothing_more(c2)  # nothing of a's twice


async def test_composite_ids_within_one_batch_are_per_event(r, open_clients, settings):
    keys = key_layout(settings.REDIS)  # two streams of one bucket: one MULTI on a cluster too
    a, b = "a", next(n for n in (f"b{i}" for i in range(2000)) if keys.bucket(n) == keys.bucket("a"))
    c = await follow(open_clients, f"/api/sse?streams={a},{b}&from=start")
    await hub_listening(a)
    await hub_listening(b)
    async with r.pipeline(transaction=True) as pipe:  # one MULTI: one XREAD reply, one batch
        pipe.xadd(key(a), {"i": "0"}).xadd(key(b), {"i": "0"}).xadd(key(a), {"i": "1"})
        a0, b0, a1 = await pipe.execute()
    events = await c.events(3)
    position = {a: "0-0", b: "0-0"}
    for event in events:  # each id covers exactly what was delivered up to that event
        body = event.json()
        position[body["stream"]] = body["id"]
        assert event.id.partition("~")[0] == f"{position[a]},{position[b]}"
    assert position == {a: a1, b: b0} and {e.json()["id"] for e in events} == {a0, b0, a1}


async def test_disconnect_cleans_up_subscription(r):
    c = await SSEClient("/api/streams/ride/sse").connect()
    await hub_listening("ride")
    hub = StreamHub.of(await redis_context())
    assert hub.stats().listeners == 1 and hub.stats().keys == 1
    await c.close()
    await wait_for(lambda: hub.stats().listeners == 0)
    assert hub.stats().keys == 0
    await wait_for(lambda: hub.stats().readers == 0)


async def test_reader_recovers_after_client_kill_without_losing_events(r, open_clients):
    c = await follow(open_clients, "/api/streams/ride/sse")
    await hub_listening("ride")
    total = 600

    async def producer():
        for k in range(0, total, 20):
            await publish("ride", 20, start=k)
            if k in (100, 300, 500):
                for conn in await our_connections(r, "blocking"):
                    await kill(r, conn)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(producer())
    events = await c.events(total, timeout=15)
    await task
    assert [int(e.json()["i"]) for e in events] == list(range(total))
    assert StreamHub.of(await redis_context()).stats().reconnects >= 1


async def test_slow_listener_gets_overflow_then_resumes_losslessly(r, open_clients, settings):
    settings.SSE_QUEUE_SIZE = 5  # read when this test's hub is built (on first use, below)
    assert StreamHub.of(await redis_context())._queue_size == 5
    (first,) = await publish("ride", 1)
    c = await follow(open_clients, "/api/streams/ride/sse?from=start")
    assert (await c.events(1))[0].id == first  # its catch-up is over: what follows is queued
    await hub_listening("ride")
    ids = await publish("ride", 50)  # one script: the reader fans all 50 out at once
    got = await c.events(6)
    delivered, overflow = got[:-1], got[-1]
    assert [e.id for e in delivered] == ids[:5]
    assert overflow.event == "overflow"
    assert overflow.json()["last_event_id"] == ids[4]
    with pytest.raises(EOFError):
        await c.next_event()
    assert StreamHub.of(await redis_context()).stats().overflow_disconnects == 1
    resumed = await follow(open_clients, "/api/streams/ride/sse", **{"Last-Event-ID": overflow.json()["last_event_id"]})
    assert [e.id for e in await resumed.events(45)] == ids[5:]


async def test_deleted_stream_ends_listeners_with_deleted_event(r, open_clients):
    await publish("gone", 1)
    c = await follow(open_clients, "/api/streams/gone/sse")
    await hub_listening("gone")
    assert (await store.streams_delete(names=["gone"])).deleted == ["gone"]
    (event,) = await c.events(1)
    assert event.event == "deleted" and event.json()["stream"] == "gone"
    with pytest.raises(EOFError):
        await c.next_event()


async def test_deletion_reaches_another_process_through_the_event_stream(r):
    from django.conf import settings as dj_settings

    from streams.engine.context import build_context

    await publish("shared", 1)
    other = build_context(dj_settings.REDIS, cluster=(await redis_context()).nodes.cluster)  # a second process's
    await other.nodes.start()
    try:
        hub = live_hub(other)
        await asyncio.wait_for(DeletionFeed.of(other).joined.wait(), 5)
        sub = await hub.subscribe(["shared"])
        await store.streams_delete(names=["shared"])  # through *this* process's services
        await wait_for(lambda: sub.end_reason is not None)
        assert (sub.end_reason, sub.end_detail) == ("deleted", "shared")
        hub.unsubscribe(sub)
    finally:
        await other.close()


async def test_hundred_concurrent_listeners_get_every_event(r, open_clients):
    names = [f"s{i}" for i in range(10)]
    clients = [await follow(open_clients, f"/api/streams/{names[i % 10]}/sse") for i in range(100)]
    for name in names:
        await hub_listening(name)
    hub = StreamHub.of(await redis_context())
    await eventually(lambda: hub.stats().listeners == 100, what="every listener subscribed")
    expected = {name: await publish(name, 20) for name in names}
    for i, c in enumerate(clients):
        assert [e.id for e in await c.events(20, timeout=10)] == expected[names[i % 10]]
    ctx = await redis_context()
    # One reader for all 100 listeners (on a cluster: one per bucket, as one XREAD reads one slot)
    readers = len({key_layout(ctx.config).bucket(n) for n in names}) if ctx.nodes.cluster else 1
    assert hub.stats().readers == readers
    blocking = await our_connections(r, "blocking")
    assert sum(1 for conn in blocking if conn["cmd"] == "xread") == readers


async def test_live_page_follows_the_stream(r):
    from django.test import AsyncClient

    resp = await AsyncClient().get("/live/ride-42")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert '"/api/streams/ride-42/metrics/sse"' in html  # its one live connection (the page's settings)
    assert "/events" not in html  # the chart comes with the metrics too: no range reads
    assets = re.findall(r'<(?:script src|link rel="stylesheet" href)="([^"]+)"', html)
    # ours: the site's frame, the pages' shared styles and script, the page's own script
    assert sorted(assets) == ["/static/rides/live.css", "/static/rides/live.js", "/static/rides/rider.js",
                              "/static/site/site.css"]
    for asset in assets:
        assert (await AsyncClient().get(asset)).status_code == 200
    script = (await AsyncClient().get("/static/rides/rider.js")).streaming_content
    assert b"EventSource" in b"".join([chunk async for chunk in script])
    assert (await AsyncClient().get("/live/bad%20name")).status_code == 400
    for query, needle in [("?streams=", "streams is required"), ("?streams=a,a", "twice"), ("?streams=a,bad%20name", "bad name")]:
        page = await AsyncClient().get(f"/live/{query}")  # the group page: the group SSE's list rule
        assert page.status_code == 400 and needle in page.content.decode(), query
    home = await AsyncClient().get("/live/")  # no group to show: the rides to pick from
    assert home.status_code == 302 and home["Location"] == "/"


async def test_listeners_do_not_each_keep_a_thread(r, open_clients):
    import threading

    await follow(open_clients, "/api/streams/warm/sse")  # asgiref's shared threads exist now
    before = threading.active_count()
    for i in range(20):
        await follow(open_clients, f"/api/streams/t{i}/sse")
    assert threading.active_count() - before < 5


async def test_a_swallowed_cancellation_still_ends_the_stream(r, monkeypatch):
    """Python 3.11's wait_for (used by redis-py) can swallow the cancel Django sends on
    disconnect; the stream must still end and unsubscribe instead of running forever."""
    from streams.live import follow as live

    await publish("ride", 3)
    entered = asyncio.Event()

    async def range_that_swallows_cancel(**kwargs):
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return []  # what wait_for does when the reply lands as the cancel arrives
        return []

    monkeypatch.setattr(live.store, "stream_range", range_that_swallows_cancel)
    follow_ = await live.follow_one("ride", resume=None, mode="start")
    stream = live.live_batches(follow_, heartbeat=0.05)

    async def consume():
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(entered.wait(), 5)
    hub = StreamHub.of(await redis_context())
    assert hub.stats().listeners == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert hub.stats().listeners == 0


async def test_a_live_body_holds_no_django_request_while_it_streams(r, open_clients):
    """The lean handler hands the body off: Django's request, response and per-request tasks
    are gone once the stream is under way (what an idle listener costs: benchmarks (k))."""
    import gc

    from django.core.handlers.asgi import ASGIRequest
    from django.http import StreamingHttpResponse

    clients = [await follow(open_clients, f"/api/streams/held{i}/sse") for i in range(3)]
    for c in clients:
        assert (await c.next_event()).retry == 2000
    await hub_listening("held2")
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, (ASGIRequest, StreamingHttpResponse))]
    assert alive == []
    ids = await publish("held1", 2)
    assert [e.id for e in await clients[1].events(2)] == ids  # and it still streams


async def test_a_handed_off_body_ends_cleanly_on_disconnect(r):
    from streams.core.instruments import SSE_OPEN

    open_before = SSE_OPEN._value.get()
    c = await SSEClient("/api/streams/ride/sse").connect()
    await hub_listening("ride")
    assert SSE_OPEN._value.get() == open_before + 1
    await c._comm.send_input({"type": "http.disconnect"})
    await asyncio.wait([c._comm.future], timeout=5)
    assert c._comm.future.done() and not c._comm.future.cancelled()
    assert c._comm.future.exception() is None  # a disconnect is a normal end, not an error
    hub = StreamHub.of(await redis_context())
    assert hub.stats().listeners == 0
    assert SSE_OPEN._value.get() == open_before  # the body's finally blocks ran


@pytest.mark.django_db(transaction=True)  # closing the response sends request_finished
async def test_outside_the_lean_handler_the_body_streams_as_usual(r):
    """Django's test client (another handler): an ordinary streaming response over the body."""
    from django.test import AsyncClient

    response = await AsyncClient().get("/api/streams/ride/sse")
    assert response.status_code == 200 and response.streaming
    first = await anext(aiter(response.streaming_content))
    assert first.startswith(b"retry:")
    await sync_to_async(response.close)()
    hub = StreamHub.of(await redis_context())
    await wait_for(lambda: hub.stats().listeners == 0)


async def test_a_deletion_feed_resumes_after_its_connection_drops(r):
    """A notice published while another process's feed is reconnecting still reaches it: the
    feed reads again from the last id it saw."""
    from django.conf import settings as dj_settings

    from streams.engine.context import build_context

    await publish("dropped", 1)
    other = build_context(dj_settings.REDIS, cluster=(await redis_context()).nodes.cluster)
    await other.nodes.start()
    try:
        hub = live_hub(other)
        await asyncio.wait_for(DeletionFeed.of(other).joined.wait(), 5)
        sub = await hub.subscribe(["dropped"])
        feeds = await our_connections(r, "events")
        assert feeds
        for conn in feeds:
            await kill(r, conn)
        await store.streams_delete(names=["dropped"])  # while the feed reconnects
        await wait_for(lambda: sub.end_reason is not None, timeout=10)
        assert (sub.end_reason, sub.end_detail) == ("deleted", "dropped")
        hub.unsubscribe(sub)
    finally:
        await other.close()


async def test_the_event_stream_is_not_taken_for_a_stream(r):
    await publish("real", 1)
    await store.streams_delete(names=["real"])  # writes the event stream
    assert await r.exists(key_layout((await redis_context()).config).events)
    registry = StreamRegistry.of(await redis_context())
    await registry.reconcile()
    assert "{_events}" not in await registry.names()


async def test_a_disconnect_right_after_the_start_ends_the_body_at_once(r, open_clients):
    """Django's own disconnect listener can take the only http.disconnect while the view
    returns; the handed-off body must still end (it did not: a listener leaked until the
    server stopped)."""
    from channels.testing import ApplicationCommunicator

    from streamsite.asgi import application
    from tests.helpers import http_scope

    comm = ApplicationCommunicator(application, http_scope("/api/streams/early/sse"))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(5)
    assert start["type"] == "http.response.start" and start["status"] == 200
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(2)  # on a timeout the communicator cancels the application
    assert not comm.future.cancelled()  # it ended by itself (before the fix: cancelled after 2 s)
    assert StreamHub.of(await redis_context()).stats().listeners == 0
