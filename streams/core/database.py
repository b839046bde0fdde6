"""The database as a dependency that may go away: its timeouts, which errors mean it cannot
be reached, and the outage clock.

While the database is down, a read goes to it at most once every ``PROBE_EVERY_S`` after the
last attempt ended (one probe in flight at a time): every other read is refused at once
(``DatabaseDown``) instead of each paying the connect timeout. The outage is logged when it starts, then one line
per ``LOG_EVERY_S`` with a count of the reads refused, and once when it ends: no traceback
per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from django.db.utils import InterfaceError, OperationalError

from streams.core.descriptors import descriptors

log = logging.getLogger(__name__)

T = TypeVar("T")

# The errors a database that went away raises (refused, timed out, a connection lost); some
# of them are a query's own failure instead (``says_unreachable`` tells them apart).
UNREACHABLE = (OperationalError, InterfaceError)
# SQLSTATE classes of a query that failed on a database that answers: 57014 a statement
# timeout, 40xxx a deadlock or serialization failure, 55P03 a lock not available.
QUERY_FAILED_STATES = ("57014", "40", "55P03")


def says_unreachable(exc: BaseException) -> bool:
    """Whether a driver error (an ``UNREACHABLE``) means the database cannot be reached, rather
    than that one query failed on a database that answers (a statement timeout, a deadlock,
    SQLite's "database is locked"): only the former starts the outage clock."""
    cause = exc.__cause__ or exc
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if state:
        return not state.startswith(QUERY_FAILED_STATES)
    return "locked" not in str(exc).lower()
POSTGRES_MIN_CONNECT_TIMEOUT_S = 2  # libpq (and psycopg) round anything shorter up to it


def with_timeouts(db: dict, *, connect_ms: int, statement_ms: int) -> dict:
    """``db`` (one ``DATABASES`` entry) with a connect and a statement timeout: PostgreSQL's
    ``connect_timeout`` (whole seconds, at least 2) and ``-c statement_timeout``; SQLite's
    ``timeout`` (how long a statement waits for a lock, its only wait)."""
    options = dict(db.get("OPTIONS") or {})
    if "postgresql" in db["ENGINE"]:
        options.setdefault("connect_timeout", max(POSTGRES_MIN_CONNECT_TIMEOUT_S, -(-connect_ms // 1000)))
        options["options"] = f"{options.get('options', '')} -c statement_timeout={statement_ms}".strip()
    elif "sqlite3" in db["ENGINE"]:
        options.setdefault("timeout", statement_ms / 1000)
    return {**db, "OPTIONS": options}


class DatabaseDown(Exception):
    """The database cannot be reached now (refused at once while it is known down)."""


class DatabaseOutage:
    """Whether the database is known down, and when it may be tried again."""

    PROBE_EVERY_S = 2.0
    LOG_EVERY_S = 30.0

    def __init__(self) -> None:
        self.down_since: float | None = None
        self._tried_at = float("-inf")
        self._probing = False
        self._refused = 0
        self._logged_at = float("-inf")

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def reset(self) -> None:
        self.__init__()

    async def through(self, read: Callable[[], Awaitable[T]]) -> T:
        """``await read()`` (database work) unless the database is known down and a probe is in
        flight or ended less than PROBE_EVERY_S ago: then DatabaseDown at once. An
        unreachable database raises DatabaseDown too (from the driver's error)."""
        if not self.may_try():
            self._count_refused()
            raise DatabaseDown("database unavailable")
        probing = self._probing = self.down
        try:
            result = await read()
        except UNREACHABLE as exc:
            if descriptors().explains(exc) or not says_unreachable(exc):
                raise  # this process is out of descriptors, or one query failed: not an outage
            self._failed(exc)
            raise DatabaseDown("database unavailable") from exc
        finally:
            # From the end of the attempt: a probe that hangs for the connect timeout is not
            # followed at once by another.
            self._tried_at = time.monotonic()
            if probing:
                self._probing = False
        self._reached()
        return result

    def may_try(self) -> bool:
        """Whether a read may go to the database now (always, unless it is known down)."""
        if not self.down:
            return True
        return not self._probing and time.monotonic() - self._tried_at >= self.PROBE_EVERY_S

    def noticed(self, exc: Exception) -> None:
        """A read that did not go through ``through`` found the database unreachable (an
        interface answering 503): the same single log line and count. (Out of descriptors is
        this process's shortage, and a query that failed is that query's: neither is counted.)"""
        if descriptors().explains(exc) or not says_unreachable(exc):
            return
        self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self.down:
            self.down_since = time.monotonic()
            self._logged_at = self.down_since
            log.warning("database unreachable (%s: %s); probing it every %.0f s", type(exc).__name__,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else "", self.PROBE_EVERY_S)
        else:
            self._count_refused()

    def _count_refused(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= self.LOG_EVERY_S:
            log.warning("database still unreachable after %.0f s: %d reads refused in the last %.0f s",
                        now - (self.down_since or now), self._refused, now - self._logged_at)
            self._refused, self._logged_at = 0, now

    def _reached(self) -> None:
        if self.down:
            log.warning("database reachable again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
            self._refused = 0


database_outage = DatabaseOutage()
