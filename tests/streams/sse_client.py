"""An in-process SSE client: drives the real ASGI app chunk by chunk, then disconnects."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from channels.testing import ApplicationCommunicator

from tests.helpers import http_scope


@dataclass
class Event:
    id: str | None = None
    event: str = "message"
    data: str = ""
    comment: str | None = None
    retry: int | None = None

    def json(self):
        return json.loads(self.data)


@dataclass
class SSEClient:
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    _buffer: str = ""
    _comm: ApplicationCommunicator | None = None
    finished: bool = False
    app: object = None  # the ASGI app to drive; None: the production entry (streamsite.asgi)

    async def connect(self, timeout: float = 5) -> "SSEClient":
        parts = urlsplit(self.path)
        headers = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        scope = http_scope(parts.path, headers=headers, query=parts.query)
        from streamsite.asgi import (
            application,  # the production entry: its lean handler and guards
        )

        self._comm = ApplicationCommunicator(self.app or application, scope)
        await self._comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self._comm.receive_output(timeout)
        assert start["type"] == "http.response.start", start
        self.status = start["status"]
        self.response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return self

    async def _more(self, timeout: float) -> bool:
        message = await self._comm.receive_output(timeout)
        assert message["type"] == "http.response.body", message
        self.body += message.get("body", b"")
        self._buffer += message.get("body", b"").decode()
        if not message.get("more_body", False):
            self.finished = True
        return bool(message.get("body"))

    async def next_event(self, timeout: float = 5) -> Event:
        """The next event, comment or retry block; raises TimeoutError if none comes."""
        async with asyncio.timeout(timeout):
            while "\n\n" not in self._buffer:
                if self.finished:
                    raise EOFError("stream ended")
                await self._more(timeout)
        block, self._buffer = self._buffer.split("\n\n", 1)
        return parse_block(block)

    async def events(self, n: int, timeout: float = 5, *, skip_comments: bool = True) -> list[Event]:
        out = []
        while len(out) < n:
            ev = await self.next_event(timeout)
            if skip_comments and (ev.comment is not None or ev.retry is not None):
                continue
            out.append(ev)
        return out

    async def json_body(self, timeout: float = 5):
        while not self.finished:
            await self._more(timeout)
        return json.loads(self.body)

    async def close(self) -> None:
        if self._comm is None:
            return
        await self._comm.send_input({"type": "http.disconnect"})
        try:
            await self._comm.wait(5)
        except asyncio.CancelledError:
            pass


def parse_block(block: str) -> Event:
    ev = Event()
    data = []
    for line in block.split("\n"):
        if line.startswith(":"):
            ev.comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            ev.id = value
        elif name == "event":
            ev.event = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            ev.retry = int(value)
    ev.data = "\n".join(data)
    return ev


async def follow(open_clients: list, path: str, **headers: str) -> SSEClient:
    """An SSE client connected to ``path``, closed with ``open_clients`` at the test's end."""
    client = await SSEClient(path, headers=headers).connect()
    open_clients.append(client)
    return client
