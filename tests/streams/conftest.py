import pytest

from tests.streams.sse_client import SSEClient


@pytest.fixture
async def open_clients():
    """SSE clients a test opens; each is closed (disconnected) at its end."""
    clients: list[SSEClient] = []
    yield clients
    for c in clients:
        await c.close()
