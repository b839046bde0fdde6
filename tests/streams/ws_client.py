"""A WebSocket listener that resumes, as a well-behaved client does: it follows
``ws/streams/{name}/`` (or the metrics socket beside it) on a real server, records every id, and whenever the socket closes
with a code that means "resume" (docs/api.md) — or drops, or cannot connect — it connects
again with ``?last_event_id=<the last id it received>``, backing off. It counts what a
client would notice: duplicates (an id at or before one already received) and reconnects."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import websockets

from streams.store.positions import id_order

FINAL_CODES = {1000}  # and every 4xxx: the end, no resume (docs/api.md)
BACKOFF_START, BACKOFF_MAX = 0.05, 1.0


def is_final(code: int | None) -> bool:
    return code in FINAL_CODES or (code is not None and 4000 <= code < 5000)


@dataclass
class ResumingListener:
    base: str  # ws://127.0.0.1:PORT
    name: str
    first_query: str = "from=start"  # the first connection's query; later ones resume by id
    socket: str = ""  # "metrics/": the live metrics socket, whose snapshots carry ids too
    last_data: dict | None = None  # the newest frame's data
    ids: list[str] = field(default_factory=list)
    duplicates: int = 0
    events: list[dict] = field(default_factory=list)  # {"event": ...} frames
    closes: list[int | None] = field(default_factory=list)  # each connection's close code
    connections: int = 0
    ended: bool = False  # a final close: no resume
    _task: asyncio.Task | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self) -> str:
        query = f"last_event_id={self.ids[-1]}" if self.ids else self.first_query
        return f"{self.base}/ws/streams/{self.name}/{self.socket}?{query}"

    async def start(self, timeout: float = 10) -> "ResumingListener":
        """Starts following; returns once the first connection is open."""
        self._task = asyncio.create_task(self._run(), name=f"listener-{self.name}")
        async with asyncio.timeout(timeout):
            await self._connected.wait()
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        backoff = BACKOFF_START
        while not self.ended:
            try:
                async with websockets.connect(self.url(), open_timeout=5, close_timeout=1) as ws:
                    self.connections += 1
                    self._connected.set()
                    backoff = BACKOFF_START
                    await self._read(ws)
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed):
                pass  # refused (the server is down) or dropped mid-handshake: try again
            if not self.ended:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _read(self, ws) -> None:
        try:
            async for frame in ws:
                self._take(json.loads(frame))
        except websockets.ConnectionClosedError:
            pass  # closed without a close frame (1006) or with an error code: recorded below
        code = ws.close_code  # None: the connection dropped with no close frame
        self.closes.append(code)
        self.ended = is_final(code)

    def _take(self, message: dict) -> None:
        if "id" in message:
            if self.ids and id_order(message["id"]) <= id_order(self.ids[-1]):
                self.duplicates += 1
            else:
                self.ids.append(message["id"])
                self.last_data = message.get("data")
        elif "event" in message:
            self.events.append(message)

    def missing(self, acked: list[str]) -> list[str]:
        """Acknowledged ids this listener never received."""
        got = set(self.ids)
        return [i for i in acked if i not in got]

    async def received(self, acked: list[str], timeout: float = 15) -> None:
        """Waits until every acknowledged id has arrived; fails naming what is missing."""
        try:
            async with asyncio.timeout(timeout):
                while self.missing(acked):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            missing = self.missing(acked)
            raise AssertionError(
                f"{self.name}: {len(missing)} of {len(acked)} acked ids never arrived (first {missing[:3]}); "
                f"closes {self.closes}, events {self.events[-3:]}"
            ) from None
