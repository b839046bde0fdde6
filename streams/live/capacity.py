"""Live capacity, bounded and explicit.

Two limits, checked before a follow starts (SSE answers 429/503 with a JSON ``detail``; a
WebSocket gets an error frame and close code 4429/4503), so existing listeners never notice:

- ``LIVE_MAX_FOLLOWED_STREAMS``: distinct streams this process's hub reads. Start-up refuses a
  value the hub's readers could not serve (more than ``REDIS_BLOCKING_POOL_MAX`` ×
  ``STREAM_HUB_KEYS_PER_READER``), so no reader ever waits forever for a connection while its
  listeners get nothing.
- ``LIVE_MAX_CONNECTIONS_PER_USER``: open live connections (SSE and WebSocket) per API token,
  per session user, and per client address for anonymous readers.

Counts are per process. A place is released from the event loop (the stream's ``finally``) or
from Django's ``response.close()`` in a worker thread, whichever comes first: a lock keeps the
count exact.
"""

from __future__ import annotations

import threading

from django.conf import settings

from streams.access.identity import AccessError, Identity


class Admission:
    """One live connection's place in the per-caller count; ``release()`` is idempotent."""

    __slots__ = ("_limiter", "_key", "_once")

    def __init__(self, limiter: "ConnectionLimiter", key: str) -> None:
        self._limiter = limiter
        self._key = key
        self._once = threading.Lock()

    def release(self) -> None:
        if self._once.acquire(blocking=False):  # the first caller releases; later ones do nothing
            self._limiter._release(self._key)


class ConnectionLimiter:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, limit: int) -> Admission:
        with self._lock:
            held = self._counts.get(key, 0)
            if held >= limit:
                raise AccessError(
                    429, f"{held} live connections is the limit (LIVE_MAX_CONNECTIONS_PER_USER={limit}) for this caller"
                )
            self._counts[key] = held + 1
        return Admission(self, key)

    def _release(self, key: str) -> None:
        with self._lock:
            left = self._counts.get(key, 0) - 1
            if left > 0:
                self._counts[key] = left
            else:
                self._counts.pop(key, None)

    def stats(self) -> dict:
        with self._lock:
            counts = list(self._counts.values())
        return {"connections": sum(counts), "callers": len(counts), "max_per_caller": max(counts, default=0)}


connections = ConnectionLimiter()


def caller_key(ident: Identity, client_address: str | None) -> str:
    """Per token (``t:``), per session user (``u:``), else per client address."""
    return ident.cache_key or f"addr:{client_address or 'unknown'}"


def check_followable(*, hub, names) -> None:
    """AccessError (503) when following ``names`` would pass LIVE_MAX_FOLLOWED_STREAMS."""
    new = [n for n in names if not hub.reads(n)]
    limit = settings.LIVE_MAX_FOLLOWED_STREAMS
    if new and hub.followed() + len(new) > limit:
        raise AccessError(503, f"this server follows its limit of {limit} streams (LIVE_MAX_FOLLOWED_STREAMS): try again later")


def admit_follow(*, hub, ident: Identity, client_address: str | None, names) -> Admission:
    """Admit a new live connection following ``names``, or raise AccessError (429/503)."""
    check_followable(hub=hub, names=names)
    return connections.admit(caller_key(ident, client_address), settings.LIVE_MAX_CONNECTIONS_PER_USER)


def capacity_stats(hub) -> dict:
    return {
        **connections.stats(),
        "max_connections_per_user": settings.LIVE_MAX_CONNECTIONS_PER_USER,
        "followed_streams": hub.followed(),
        "max_followed_streams": settings.LIVE_MAX_FOLLOWED_STREAMS,
    }
