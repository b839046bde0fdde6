"""The internals streams/core/compat.py reaches into are still there (fails when a library
changes under us), and a library version it was not written for stops start-up."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from streams.core import compat


def test_installed_versions_are_the_ones_written_for():
    compat.check_library_versions()


def test_another_version_stops_start_up_naming_the_library():
    def installed(package):
        return "6.0.0" if package == "Django" else compat.WRITTEN_FOR[package] + ".0"

    with pytest.raises(ImproperlyConfigured, match=r"Django 6\.0\.0 is installed.*Django 5\.2"):
        compat.check_library_versions(installed)


async def test_django_sends_the_start_of_a_response_through_send_response():
    """What the lean handler's handoff relies on: the start (status, headers, cookies) goes
    out through ``send_response``, which ``handle`` calls before it closes the response."""
    import inspect

    from django.core.handlers.asgi import ASGIHandler
    from django.http import StreamingHttpResponse

    async def nothing():
        return
        yield

    response = StreamingHttpResponse(nothing(), content_type="text/event-stream", status=201)
    response.set_cookie("c", "v")
    sent = []

    async def send(message):
        sent.append(message)

    assert await compat.send_response_start(ASGIHandler.__new__(ASGIHandler), response, send)
    assert [m["type"] for m in sent] == ["http.response.start"] and sent[0]["status"] == 201
    headers = dict(sent[0]["headers"])
    assert headers[b"Content-Type"] == b"text/event-stream" and headers[b"Set-Cookie"].startswith(b"c=v")
    handle = inspect.getsource(ASGIHandler.handle)
    assert handle.index("self.send_response(response, send)") < handle.index("await sync_to_async(response.close)()")


def test_django_builds_the_chain_from_settings_middleware():
    import inspect

    from django.core.handlers.base import BaseHandler

    assert "settings.MIDDLEWARE" in inspect.getsource(BaseHandler.load_middleware)


def test_ninja_awaits_an_async_bearer_call():
    """streams.api.Caller overrides HttpBearer.__call__ with a coroutine; ninja must see it as
    async (is_async_callable) and await it on async operations."""
    from ninja.utils import is_async_callable

    from streams.api import READ

    assert is_async_callable(READ)


def test_stop_signals_chain_to_the_servers_own_handler():
    import asyncio
    import os
    import signal

    calls = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def main():
        signal.signal(signal.SIGINT, lambda signum, frame: calls.append("server"))
        compat.chain_stop_signals(lambda: calls.append("ours"))
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.05)

    try:
        asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert calls == ["server", "ours"]


def test_channels_dispatch_still_closes_connections_per_message_by_handler_name():
    """compat.dispatch_without_db_close copies AsyncConsumer.dispatch without its
    aclose_old_connections(); when Channels changes that method, re-check the copy."""
    import inspect

    from channels.consumer import AsyncConsumer, get_handler_name

    source = inspect.getsource(AsyncConsumer.dispatch)
    assert "get_handler_name(message)" in source and "aclose_old_connections()" in source
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"


def test_an_async_consumers_base_send_is_the_connections_send():
    """streams/live/consumers.py sends each entry frame with ``self.base_send`` directly."""
    import inspect

    from channels.consumer import AsyncConsumer

    source = inspect.getsource(AsyncConsumer.__call__)
    assert "self.base_send = send" in source
    assert inspect.getsource(AsyncConsumer.send).strip().endswith("await self.base_send(message)")
