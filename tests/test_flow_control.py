"""The stall watch under servers with their own flow control (uvicorn): one clock per event
loop instead of a timer per connection. (Real servers: tests/test_shutdown.py.)"""

import asyncio

import pytest

from streamsite.server.flow_control import (
    STALL_TICK,
    ClientStalled,
    StallClock,
    _StallWatch,
)
from tests.helpers import eventually


async def test_a_send_that_waits_past_the_stall_timeout_is_cut(settings):
    settings.LIVE_STALL_TIMEOUT_MS = 300
    loop = asyncio.get_running_loop()
    never = asyncio.Event()

    async def blocked(message):
        await never.wait()  # a client that reads nothing: the server's send never returns

    watch = _StallWatch(blocked)
    started = loop.time()
    with pytest.raises(ClientStalled):
        await watch.send({"type": "http.response.body", "body": b"x", "more_body": True})
    assert loop.time() - started >= 0.3
    with pytest.raises(ClientStalled):  # and every later send fails at once
        await watch.send({"type": "http.response.body", "body": b"y", "more_body": True})
    watch.close()
    clock = StallClock.of(loop)
    await eventually(lambda: clock._task is None, timeout=5)  # ends after the last connection


async def test_connections_that_are_not_sending_are_never_cut(settings):
    settings.LIVE_STALL_TIMEOUT_MS = 100
    sent = []

    async def instant(message):
        sent.append(message)

    idle = _StallWatch(instant)
    await idle.send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(3 * STALL_TICK)  # several of the clock's checks, each past the timeout
    await idle.send({"type": "http.response.body", "body": b"late", "more_body": False})
    assert not idle.stalled and len(sent) == 2
    idle.close()


async def test_a_server_cancellation_is_not_taken_for_a_stall(settings):
    settings.LIVE_STALL_TIMEOUT_MS = 60_000
    never = asyncio.Event()

    async def blocked(message):
        await never.wait()

    watch = _StallWatch(blocked)
    task = asyncio.create_task(watch.send({"type": "http.response.body", "body": b"x"}))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert not isinstance(caught.value, ClientStalled)
    watch.close()
