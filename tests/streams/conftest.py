"""Fixtures of the stream tests that speak to the ASGI application."""

import pytest
from channels.testing import WebsocketCommunicator


@pytest.fixture
def app():
    """The production ASGI application (HTTP and WebSocket)."""
    from streamsite.asgi import application

    return application


@pytest.fixture
async def sockets(r):
    """Open sockets, disconnected at the end — before ``r`` closes the loop's Redis context
    (a consumer that disconnects after that would build a new one that nobody closes)."""
    opened: list[WebsocketCommunicator] = []
    yield opened
    for ws in opened:
        await ws.disconnect()
