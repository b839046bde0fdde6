"""The identity cache while the database cannot be reached (issue 21): a known credential
within AUTH_OUTAGE_GRACE goes on, a revoked one stays revoked, an unknown one is 503 (never
401 or 500), the database is probed at most once every PROBE_EVERY_S, and the outage is one
log line per interval. The database fails for real: a connection to a SQLite file in a
directory that does not exist (tests/test_database_outage.py does it to a PostgreSQL server)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.db import database_sync_to_async
from django.db import connections
from django.test import AsyncClient

from streams.access import identity
from streams.access.identity import AccessError, IdentityUnavailable, identity_cache
from streams.core.database import DatabaseOutage, database_outage, with_timeouts
from streams.live.follow import REVOKED, UNAVAILABLE, guard_verdict
from streams.models import ApiToken
from streams.store.services import StreamMeta
from tests.helpers import bearer, user_with_token

pytestmark = pytest.mark.django_db(transaction=True)


class Database:
    """Whether the identity loads reach the database; ``attempts`` counts those that tried."""

    def __init__(self) -> None:
        self.down = False
        self.attempts = 0


def _refused_connection() -> None:
    """A real connection attempt that fails (django.db.utils.OperationalError)."""
    broken = connections["default"].copy("unreachable")
    broken.settings_dict["NAME"] = "/nonexistent-directory/streamsite/db.sqlite3"
    try:
        broken.ensure_connection()
    finally:
        broken.close()


@pytest.fixture
def database(monkeypatch, settings):
    """The identity loads, failing for real while ``database.down``."""
    db = Database()
    settings.AUTH_CACHE_TTL_MS = 1  # every call asks again: the outage rules answer
    settings.AUTH_OUTAGE_GRACE_MS = 300000

    def failing_first(real):
        async def load(*args):
            db.attempts += 1
            if db.down:
                await database_sync_to_async(_refused_connection)()
            return await real(*args)
        return load

    monkeypatch.setattr(identity, "_load_token", failing_first(identity._load_token))
    monkeypatch.setattr(identity, "_load_user", failing_first(identity._load_user))
    return db


async def _expire_ttl() -> None:
    await asyncio.sleep(0.005)


async def test_a_known_token_goes_on_from_the_cache_while_the_database_is_down(database):
    user, raw = await user_with_token("ana")
    assert (await identity.identity_for_token(raw)).user_id == user.pk
    database.down = True
    for _ in range(3):
        await _expire_ttl()
        assert (await identity.identity_for_token(raw)).user_id == user.pk
    assert database_outage.down


async def test_past_the_grace_a_known_token_gets_503_with_retry_after(database, settings):
    _, raw = await user_with_token("ana")
    await identity.identity_for_token(raw)
    database.down = True
    settings.AUTH_OUTAGE_GRACE_MS = 50
    await asyncio.sleep(0.1)
    with pytest.raises(IdentityUnavailable) as caught:
        await identity.identity_for_token(raw)
    assert caught.value.status == 503 and caught.value.retry_after == 5


async def test_a_token_revoked_before_the_outage_stays_revoked(database):
    user, raw = await user_with_token("ana")
    await identity.identity_for_token(raw)
    await ApiToken.objects.filter(user=user).aupdate(is_active=False)
    identity.forget_identities()
    with pytest.raises(AccessError) as seen:
        await identity.identity_for_token(raw)
    assert seen.value.status == 401
    database.down = True
    await _expire_ttl()
    with pytest.raises(AccessError) as during:
        await identity.identity_for_token(raw)
    assert during.value.status == 401  # what the database said last, not "try again"


async def test_an_unknown_token_gets_503_never_401_while_the_database_is_down(database):
    database.down = True
    with pytest.raises(IdentityUnavailable):
        await identity.identity_for_token("sst_never-seen")


async def test_the_api_answers_503_json_with_retry_after_for_an_unknown_token(database):
    database.down = True
    resp = await AsyncClient().get("/api/streams", **bearer("sst_never-seen"))
    assert resp.status_code == 503 and resp["Retry-After"] == "5"
    assert resp.json()["detail"].startswith("database unavailable")


async def test_the_database_is_probed_at_most_once_per_interval_then_recovers(database, monkeypatch):
    monkeypatch.setattr(DatabaseOutage, "PROBE_EVERY_S", 0.3)
    database.down = True
    for n in range(20):
        with pytest.raises(IdentityUnavailable):
            await identity.identity_for_token(f"sst_unknown-{n}")
    assert database.attempts == 1  # the first found it down; the others were refused at once
    await asyncio.sleep(0.35)
    with pytest.raises(IdentityUnavailable):
        await identity.identity_for_token("sst_unknown-a")
    assert database.attempts == 2
    database.down = False
    await asyncio.sleep(0.35)
    with pytest.raises(AccessError) as unknown:
        await identity.identity_for_token("sst_unknown-b")
    assert unknown.value.status == 401 and not database_outage.down


async def test_a_known_token_never_waits_for_the_probe(database, monkeypatch):
    """While the database is down, the cache answers and the probe runs beside the answer."""
    user, raw = await user_with_token("ana")
    await identity.identity_for_token(raw)
    database.down = True
    await _expire_ttl()
    await identity.identity_for_token(raw)  # finds it down
    monkeypatch.setattr(DatabaseOutage, "PROBE_EVERY_S", 0.0)
    database.down = False
    await _expire_ttl()
    attempts = database.attempts
    assert (await identity.identity_for_token(raw)).user_id == user.pk  # answered from the cache
    await asyncio.sleep(0.2)  # the probe, beside it, found the database back
    assert database.attempts == attempts + 1 and not database_outage.down
    await identity_cache.close()


async def test_the_outage_is_logged_once_then_one_line_per_interval(database, monkeypatch, caplog):
    monkeypatch.setattr(DatabaseOutage, "LOG_EVERY_S", 0.2)
    database.down = True
    with caplog.at_level(logging.WARNING, logger="streams.core.database"):
        for n in range(30):
            with pytest.raises(IdentityUnavailable):
                await identity.identity_for_token(f"sst_unknown-{n}")
        await asyncio.sleep(0.25)
        with pytest.raises(IdentityUnavailable):
            await identity.identity_for_token("sst_unknown-last")
    lines = [r.getMessage() for r in caplog.records if r.name == "streams.core.database"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("database unreachable") and "30 reads refused" in lines[1]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_session_unconfirmed_at_the_handshake_answers_from_the_cache(database):
    """The WebSocket's session user could not be read (streamsite/routing.py): the session's
    last confirmation answers within the grace; a session never confirmed is a 503."""
    user, _ = await user_with_token("ana")
    known = identity._with_session(await identity.identity_for_user(user.pk), "k" * 32)
    assert (await identity.identify_scope({identity.SESSION_UNCONFIRMED: "k" * 32}, None)) == known
    with pytest.raises(IdentityUnavailable):
        await identity.identify_scope({identity.SESSION_UNCONFIRMED: "u" * 32}, None)


# --- the follow's re-check, and the timeouts: pure ------------------------------------------------
def test_the_recheck_verdict():
    ident = identity.Identity(user_id=1, username="ana", via="token")
    public = StreamMeta(owner_id=2, visibility="public")
    private = StreamMeta(owner_id=2, visibility="private")
    assert guard_verdict(ident, {"a": public}) is None
    assert guard_verdict(ident, None) is None  # Redis unreachable: postponed
    assert guard_verdict(ident, {"a": private}) is REVOKED
    assert guard_verdict(None, None) is REVOKED
    assert guard_verdict(None, None, confirmed=False) is UNAVAILABLE


def test_every_connection_gets_a_connect_and_a_statement_timeout():
    pg = with_timeouts({"ENGINE": "django_prometheus.db.backends.postgresql"}, connect_ms=5000, statement_ms=10000)
    assert pg["OPTIONS"] == {"connect_timeout": 5, "options": "-c statement_timeout=10000"}
    short = with_timeouts({"ENGINE": "django.db.backends.postgresql", "OPTIONS": {"options": "-c search_path=x"}},
                          connect_ms=300, statement_ms=500)
    assert short["OPTIONS"] == {"connect_timeout": 2, "options": "-c search_path=x -c statement_timeout=500"}
    lite = with_timeouts({"ENGINE": "django.db.backends.sqlite3"}, connect_ms=5000, statement_ms=10000)
    assert lite["OPTIONS"] == {"timeout": 10.0}
