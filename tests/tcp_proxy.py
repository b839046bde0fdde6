"""A TCP proxy a test controls, to take a dependency (the database) away for real.

``forward`` (the start): every byte goes through. ``refuse()``: the listener is closed (new
connections are refused by the kernel) and open connections are cut. ``hang()``: connections
are accepted and nothing is forwarded either way (a database that stops answering without
refusing). ``restore()``: forward again (held and open connections are cut first)."""

from __future__ import annotations

import asyncio
import contextlib
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "forward"
        self.accepted = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)
        return self

    async def refuse(self) -> None:
        self.mode = "refuse"
        if self._server is not None:
            self._server.close()
            self._server = None
        self._cut()

    async def hang(self) -> None:
        if self._server is None:
            await self.start()
        self.mode = "hang"

    async def restore(self) -> None:
        self._cut()
        self.mode = "forward"
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.refuse()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _cut(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        self._tasks.add(asyncio.current_task())
        try:
            if self.mode != "forward":
                await self._held(reader)
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except OSError:
            pass
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.close()

    async def _held(self, reader: asyncio.StreamReader) -> None:
        """Read and drop what the client sends until the connection is cut (hang)."""
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while self.mode == "hang":  # held, not forwarded
                    await asyncio.sleep(0.05)
                if self.mode != "forward" or writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
