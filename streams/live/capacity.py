"""Live capacity, bounded and explicit.

Three limits, checked before a follow starts (SSE answers 429/503 with a JSON ``detail``; a
WebSocket gets an error frame and close code 4429, or 1013 for a 503: try again), so existing listeners never notice:

- ``FD_RESERVE``: a new follow that would take one of the file descriptors kept in reserve
  gets 503 with ``Retry-After`` and its connection closed (streams/core/descriptors.py).
- ``LIVE_MAX_FOLLOWED_STREAMS``: distinct streams this process's hub reads. Start-up refuses a
  value the hub's readers could not serve (more than ``REDIS_BLOCKING_POOL_MAX`` ×
  ``STREAM_HUB_KEYS_PER_READER``), so no reader ever waits forever for a connection while its
  listeners get nothing.
- ``LIVE_MAX_CONNECTIONS_PER_USER``: open live connections (SSE and WebSocket) per API token,
  per session user, and per client address for anonymous readers.

- ``LIVE_MAX_FOLLOWED_STREAMS_PER_USER``: distinct streams one user follows at once (the union
  over their open follows and one-shot metrics reads; per user whichever token or session they
  come with, anonymous callers per client address), counted beside the process-wide cap so one
  user reaching theirs (429) leaves the rest of the pool to everyone else.

And one limit of publishing (REST and WebSocket call the same ``check_publish_rate``):

- ``PUBLISH_RATE_PER_TOKEN``: entries per second per API token (per session user without one),
  a token bucket holding 10 s of them; over it, 429 with a ``Retry-After``.

Callers with ``streams.manage_all_streams`` (superusers have every permission) are exempt from
the per-user followed streams and the publish rate (``exempt``).

Counts are per process. A place is released from the event loop (the stream's ``finally``) or
from Django's ``response.close()`` in a worker thread, whichever comes first: a lock keeps the
count exact.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable

from django.conf import settings

from streams.access.identity import MANAGE_ALL_STREAMS, AccessError, Identity
from streams.core.descriptors import RETRY_AFTER_S, Tally, descriptors
from streams.core.instruments import DESCRIPTOR_REFUSALS, PUBLISHES_REFUSED

log = logging.getLogger(__name__)


class CapacityError(AccessError):
    """A limit of this module: 429 (``retry_after`` seconds when known) or 503; with
    ``close_connection`` the answer also closes the client's connection (its descriptor)."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None, *,
                 close_connection: bool = False) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after
        self.close_connection = close_connection


class Admission:
    """What one live follow holds (a connection's place, its followed streams);
    ``release()`` gives all of it back, once (later calls do nothing)."""

    __slots__ = ("_releases", "_once")

    def __init__(self, *releases: Callable[[], None]) -> None:
        self._releases = releases
        self._once = threading.Lock()

    def release(self) -> None:
        if self._once.acquire(blocking=False):  # the first caller releases; later ones do nothing
            for release in self._releases:
                release()


class ConnectionLimiter:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, limit: int) -> Admission:
        with self._lock:
            held = self._counts.get(key, 0)
            if held >= limit:
                raise CapacityError(
                    429, f"{held} live connections is the limit (LIVE_MAX_CONNECTIONS_PER_USER={limit}) for this caller"
                )
            self._counts[key] = held + 1
        return Admission(lambda: self._release(key))

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


class FollowedByUser:
    """The distinct streams each user follows in this process: per user, stream -> how many of
    their follows (and one-shot reads) hold it."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, names: Iterable[str], limit: int | None) -> Callable[[], None]:
        """Hold ``names`` for ``key`` (no limit when ``limit`` is None) and return the release;
        CapacityError (429) when the user's distinct streams would pass ``limit``."""
        names = tuple(dict.fromkeys(names))
        with self._lock:
            held = self._held.setdefault(key, {})
            new = sum(1 for n in names if n not in held)
            if limit is not None and new and len(held) + new > limit:
                if not held:
                    del self._held[key]
                raise CapacityError(
                    429,
                    f"following {len(held) + new} streams at once is over the limit "
                    f"(LIVE_MAX_FOLLOWED_STREAMS_PER_USER={limit}) for this user",
                )
            for n in names:
                held[n] = held.get(n, 0) + 1
        return lambda: self._give_back(key, names)

    def _give_back(self, key: str, names: tuple[str, ...]) -> None:
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return
            for n in names:
                left = held.get(n, 0) - 1
                if left > 0:
                    held[n] = left
                else:
                    held.pop(n, None)
            if not held:
                del self._held[key]

    def count(self, key: str) -> int:
        with self._lock:
            return len(self._held.get(key, ()))

    def stats(self) -> dict:
        with self._lock:
            counts = [len(h) for h in self._held.values()]
        return {"following_users": len(counts), "max_followed_per_user": max(counts, default=0)}


connections = ConnectionLimiter()
followed = FollowedByUser()


def exempt(ident: Identity) -> bool:
    """Stream managers (``streams.manage_all_streams``; superusers have it) pass the per-user
    followed-streams limit and the publish rate."""
    return ident.has_perm(MANAGE_ALL_STREAMS)


def caller_key(ident: Identity, client_address: str | None) -> str:
    """Per token (``t:``), per session user (``u:``), else per client address."""
    return ident.cache_key or f"addr:{client_address or 'unknown'}"


def user_key(ident: Identity, client_address: str | None) -> str:
    """Per user, whichever token or session they come with; anonymous callers per address."""
    return f"u:{ident.user_id}" if ident.user_id is not None else f"addr:{client_address or 'unknown'}"


def check_followable(*, hub, names) -> None:
    """CapacityError (503) when following ``names`` would pass LIVE_MAX_FOLLOWED_STREAMS."""
    new = [n for n in names if not hub.reads(n)]
    limit = settings.LIVE_MAX_FOLLOWED_STREAMS
    if new and hub.followed() + len(new) > limit:
        raise CapacityError(503, f"this server follows its limit of {limit} streams (LIVE_MAX_FOLLOWED_STREAMS): try again later")


_refusals = Tally()


def check_descriptors() -> None:
    """CapacityError (503, ``Retry-After``, connection closed) when a new follow would eat into
    the descriptors kept in reserve (``FD_RESERVE``; streams/core/descriptors.py)."""
    budget = descriptors()
    if not budget.follow_fits():
        DESCRIPTOR_REFUSALS.labels(where="follow").inc()
        _refusals.note(log, "new follows refused: open file descriptors reached the limit less FD_RESERVE")
        raise CapacityError(
            503,
            f"this server is at its limit of open connections ({budget.budget.follows} of "
            f"{budget.budget.limit} file descriptors; FD_RESERVE={budget.budget.reserve}): try again later",
            retry_after=RETRY_AFTER_S, close_connection=True,
        )


def hold_streams(*, hub, ident: Identity, client_address: str | None, names) -> Admission:
    """Hold ``names`` in the caller's followed streams after checking both followed-stream
    limits (the user's: 429, the process's: 503); no connection place. For a one-shot read
    that follows streams while it answers (the live metrics' ``GET``)."""
    limit = None if exempt(ident) else settings.LIVE_MAX_FOLLOWED_STREAMS_PER_USER
    release = followed.take(user_key(ident, client_address), names, limit)
    try:
        check_followable(hub=hub, names=names)
    except BaseException:
        release()
        raise
    return Admission(release)


def admit_follow(*, hub, ident: Identity, client_address: str | None, names) -> Admission:
    """Admit a new live connection following ``names``, or raise CapacityError (429/503)."""
    check_descriptors()
    streams = hold_streams(hub=hub, ident=ident, client_address=client_address, names=names)
    try:
        place = connections.admit(caller_key(ident, client_address), settings.LIVE_MAX_CONNECTIONS_PER_USER)
    except BaseException:
        streams.release()
        raise
    return Admission(streams.release, place.release)


# --- publish rate ---------------------------------------------------------------------------
BUCKET_SECONDS = 10  # the bucket holds this many seconds of PUBLISH_RATE_PER_TOKEN
PRUNE_AT = 10_000  # buckets kept before the full (idle) ones are dropped


class PublishRate:
    """A token bucket per caller key: refills at ``rate`` entries a second up to
    ``BUCKET_SECONDS`` × ``rate``. A batch larger than the bucket passes only when the bucket
    is full, and leaves it in debt (the next publish waits until it is paid)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, at)
        self._lock = threading.Lock()

    def take(self, key: str, entries: int, rate: int) -> float:
        """0 when ``entries`` may be published now (and takes them), else the seconds to wait."""
        size = rate * BUCKET_SECONDS
        now = time.monotonic()
        with self._lock:
            level, at = self._buckets.get(key, (size, now))
            level = min(size, level + (now - at) * rate)
            if level >= min(entries, size):
                self._buckets[key] = (level - entries, now)
                if len(self._buckets) > PRUNE_AT:
                    self._prune(now, rate, size)
                return 0.0
            self._buckets[key] = (level, now)
            return (min(entries, size) - level) / rate

    def _prune(self, now: float, rate: int, size: int) -> None:
        for key, (level, at) in list(self._buckets.items()):
            if level + (now - at) * rate >= size:
                del self._buckets[key]

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


publish_rate = PublishRate()


def check_publish_rate(ident: Identity, entries: int) -> None:
    """The one publish-rate check of REST and WebSocket publishing: takes ``entries`` from the
    caller's bucket (per API token; per session user), or raises CapacityError (429, with
    ``retry_after`` in whole seconds) and counts the refusal. Stream managers are exempt."""
    if exempt(ident):
        return
    rate = settings.PUBLISH_RATE_PER_TOKEN
    wait = publish_rate.take(caller_key(ident, None), entries, rate)
    if wait:
        PUBLISHES_REFUSED.labels(reason="rate").inc()
        raise CapacityError(
            429,
            f"publishing faster than the limit of {rate} entries a second per token "
            f"(PUBLISH_RATE_PER_TOKEN={rate}): retry in {math.ceil(wait)} s",
            retry_after=math.ceil(wait),
        )


def capacity_stats(hub) -> dict:
    return {
        **connections.stats(),
        **followed.stats(),
        "max_connections_per_user": settings.LIVE_MAX_CONNECTIONS_PER_USER,
        "followed_streams": hub.followed(),
        "max_followed_streams": settings.LIVE_MAX_FOLLOWED_STREAMS,
        "max_followed_streams_per_user": settings.LIVE_MAX_FOLLOWED_STREAMS_PER_USER,
    }
