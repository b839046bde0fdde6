"""The process's file descriptors: a budget under its limit, with a reserve kept free.

Every socket (a listener's connection, a Redis or database connection) and every file opened
(a template, a module imported late) takes one descriptor; at the soft ``RLIMIT_NOFILE`` the
kernel refuses the next one (EMFILE). Refusing there is too late: a refused ``accept()``
becomes a reset for the client, and the request that needed one more socket (an identity
reloaded from the database) fails. So the process keeps ``FD_RESERVE`` descriptors free of
long-lived connections:

- a new follow (SSE, WebSocket) is refused with 503 once the open descriptors reach
  ``limit - reserve`` (``DescriptorBudget.follows``; streams/live/capacity.py);
- any other request is refused with 503 at the HTTP edge once half the reserve is used too
  (``DescriptorBudget.requests``; streamsite/server/http.py), except ``/health/`` and
  ``/metrics``, which answer from what is left.

Counting ``/proc/self/fd`` costs ~0.2 ms per thousand descriptors, too much for every request:
``OpenDescriptors`` counts at most once a second while far from a threshold, and adds one for
each connection let in since (an estimate that can only be too high); near a threshold it
counts again, at most every 10 ms.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_RESERVE = 64
SMALL_LIMIT = 256  # under it the default reserve is a quarter of the limit
UNLIMITED = 1 << 62
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
RETRY_AFTER_S = 5
AT_LIMIT = 2  # with no reserve, this close to the limit counts as exhausted


def soft_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` of this process (``UNLIMITED`` when there is none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def count_open() -> int:
    """Open descriptors of this process. Listing them needs one more: when even that is
    refused, every descriptor is taken."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
    except OSError as exc:
        if exc.errno in OUT_OF_DESCRIPTORS:
            return soft_limit()
        raise


def reserve_setting(raw: str | None, limit: int) -> int:
    """``FD_RESERVE`` (``raw``; None or empty: the default) checked against ``limit``: 64, or a
    quarter of a limit under 256; 0 keeps no reserve; at least half the limit is refused."""
    if raw is None or not raw.strip():
        return limit // 4 if limit < SMALL_LIMIT else DEFAULT_RESERVE
    try:
        reserve = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"FD_RESERVE={raw!r} is not a valid integer") from None
    if reserve < 0:
        raise ImproperlyConfigured(f"FD_RESERVE={raw!r} must be >= 0")
    if reserve * 2 >= limit:
        raise ImproperlyConfigured(
            f"FD_RESERVE={reserve} must be under half the file descriptor limit ({limit}, ulimit -n): "
            "raise the limit or lower the reserve"
        )
    return reserve


@dataclass(frozen=True)
class DescriptorBudget:
    limit: int
    reserve: int

    @property
    def follows(self) -> int:
        """Open descriptors at which a new follow is refused."""
        return self.limit - self.reserve

    @property
    def requests(self) -> int:
        """Open descriptors at which a request other than health and metrics is refused."""
        return self.limit - self.reserve // 2

    @property
    def bounded(self) -> bool:
        return self.reserve > 0 and self.limit < UNLIMITED


class OpenDescriptors:
    """An estimate of the open descriptors that is never below the truth by more than what
    opened without being told (``let_in``): recounted every ``fresh`` seconds, or when the
    estimate reaches the threshold asked about (at most every ``min_gap`` seconds)."""

    def __init__(self, count: Callable[[], int] = count_open, clock: Callable[[], float] = time.monotonic,
                 fresh: float = 1.0, min_gap: float = 0.01) -> None:
        self._count, self._clock, self._fresh, self._min_gap = count, clock, fresh, min_gap
        self._counted = 0
        self._since = 0  # connections let in since the count
        self._at = float("-inf")

    def reaches(self, threshold: int) -> bool:
        """Whether the open descriptors (estimated) are at ``threshold`` or above."""
        now = self._clock()
        age = now - self._at
        if age >= self._fresh or (self._counted + self._since >= threshold and age >= self._min_gap):
            self._counted, self._since, self._at = self._count(), 0, now
        return self._counted + self._since >= threshold

    def let_in(self) -> None:
        """A new connection was let in: one more descriptor until the next count."""
        self._since += 1

    def exact(self) -> int:
        self._counted, self._since, self._at = self._count(), 0, self._clock()
        return self._counted


SQLITE_CANNOT_OPEN = "unable to open database file"  # SQLite's only word for EMFILE


def is_out_of_descriptors(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the process or the system
    ran out of descriptors: an ``OSError`` with EMFILE / ENFILE, or a library's message
    carrying its text (libpq: "could not create socket: Too many open files")."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS:
            return True
        if "Too many open files" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class ProcessDescriptors:
    """The process's budget (its limit read once, the reserve from settings) and its estimate
    of open descriptors; ``descriptors()`` gives the one of this process."""

    def __init__(self, budget: DescriptorBudget, opened: OpenDescriptors | None = None) -> None:
        self.budget = budget
        self.opened = opened or OpenDescriptors()

    def follow_fits(self) -> bool:
        """Whether a new follow fits under ``limit - reserve`` (and counts it in)."""
        if not self.budget.bounded:
            return True
        if self.opened.reaches(self.budget.follows):
            return False
        self.opened.let_in()
        return True

    def request_fits(self) -> bool:
        """Whether a request fits under ``limit - reserve / 2`` (its connection was counted
        in when it was made: ``opened.let_in()``)."""
        return not (self.budget.bounded and self.opened.reaches(self.budget.requests))

    def exhausted(self) -> bool:
        """Whether the open descriptors (counted now) reach the requests' threshold, or (with
        no reserve) the limit itself."""
        if self.budget.limit >= UNLIMITED:
            return False
        return self.opened.exact() >= (self.budget.requests if self.budget.bounded else self.budget.limit - AT_LIMIT)

    def explains(self, exc: BaseException) -> bool:
        """Whether ``exc`` is for want of a descriptor: it says so (``is_out_of_descriptors``),
        or it says nothing (SQLite: "unable to open database file") and they are exhausted now.
        (Only that message costs a count of ``/proc/self/fd``: any other error is not ours.)"""
        if is_out_of_descriptors(exc):
            return True
        return SQLITE_CANNOT_OPEN in str(exc) and self.exhausted()


_process: ProcessDescriptors | None = None
_process_lock = threading.Lock()


def descriptors() -> ProcessDescriptors:
    """This process's budget: the soft limit now, ``FD_RESERVE`` from the settings."""
    global _process
    if _process is None:
        with _process_lock:
            if _process is None:
                _process = ProcessDescriptors(DescriptorBudget(limit=soft_limit(), reserve=settings.FD_RESERVE))
    return _process


class Tally:
    """One log line per ``interval`` for a kind of event, with how many happened since the
    last line (the first event of a quiet spell is logged at once)."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval, self._clock = interval, clock
        self._count = 0
        self._logged_at = float("-inf")
        self._lock = threading.Lock()

    def due(self) -> int:
        """0 while this interval's line is written; else how many events the line stands for
        (this one included), and the count starts again."""
        with self._lock:
            self._count += 1
            now = self._clock()
            if now - self._logged_at < self._interval:
                return 0
            count, self._count, self._logged_at = self._count, 0, now
            return count

    def note(self, logger: logging.Logger, message: str) -> None:
        """Log ``message`` with the count, at most once an interval (warning)."""
        count = self.due()
        if count:
            logger.warning("%s (%d in the last %g s)", message, count, self._interval)
