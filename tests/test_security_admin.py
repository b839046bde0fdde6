"""Issue 20, items 6-9 (part): the admin cannot impersonate, an archive deletes only what it
archived, offloaded work is bounded and shared fairly, login throttling, /metrics behind a
proxy (docs/security.md)."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.test import AsyncClient, Client

from streams.core import offload
from streams.models import ApiToken, Share
from streams.store import services as store
from tests.helpers import (
    actor,
    asgi_response,
    bearer,
    http_scope,
    logged_in,
    make_user,
    staff_with,
    user_with_token,
)

RIDE = [{"t": str(i), "power": str(200 + i)} for i in range(30)]
BODY = {"title": "t", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0, 1], "power": [100, 110]}}


# --- item 8: the admin cannot impersonate -------------------------------------------------------


def add_token(client: Client, user_pk: int):
    return client.post("/admin/streams/apitoken/add/", {"user": user_pk, "name": "t", "scopes": "read,publish,manage",
                                                         "is_active": "on"})


def add_share(client: Client, owner_pk: int, viewer_pk: int):
    return client.post("/admin/streams/share/add/", {"owner": owner_pk, "viewer": viewer_pk})


# who acts, for whom -> the token or share is created
ADMIN_TABLE = [
    ("token-clerk", "self", True),
    ("token-clerk", "root", False),
    ("token-clerk", "athlete", False),
    ("token-manager", "root", True),
    ("token-manager", "athlete", True),
    ("superuser", "athlete", True),
]


@pytest.mark.django_db
@pytest.mark.parametrize("who,for_whom,allowed", ADMIN_TABLE)
def test_minting_a_token_for_another_user_needs_manage_all_streams(who, for_whom, allowed):
    root = make_user("root", superuser=True)
    athlete = make_user("athlete")
    actors = {
        "token-clerk": staff_with("clerk", "add_apitoken", "view_apitoken"),
        "token-manager": staff_with("mgr", "add_apitoken", "view_apitoken", "manage_all_streams"),
        "superuser": root,
    }
    me = actors[who]
    target = {"self": me, "root": root, "athlete": athlete}[for_whom]
    resp = add_token(logged_in(me), target.pk)
    created = ApiToken.objects.filter(user=target).exists()
    assert created is allowed, resp.content[:2000]
    if allowed:
        assert resp.status_code == 302
    else:
        assert resp.status_code == 200 and b"Select a valid choice" in resp.content


@pytest.mark.django_db
@pytest.mark.parametrize("who,for_whom,allowed", [
    ("share-clerk", "self", True),
    ("share-clerk", "athlete", False),
    ("share-manager", "athlete", True),
    ("superuser", "athlete", True),
])
def test_a_share_on_another_users_behalf_needs_manage_all_streams(who, for_whom, allowed):
    root = make_user("root", superuser=True)
    athlete = make_user("athlete")
    coach = make_user("coach")
    actors = {
        "share-clerk": staff_with("clerk", "add_share", "view_share"),
        "share-manager": staff_with("mgr", "add_share", "view_share", "manage_all_streams"),
        "superuser": root,
    }
    me = actors[who]
    owner = {"self": me, "athlete": athlete}[for_whom]
    # The clerk tries to give themself (or the coach) read access to the owner's data.
    viewer = coach if owner == me else me
    resp = add_share(logged_in(me), owner.pk, viewer.pk)
    assert Share.objects.filter(owner=owner, viewer=viewer).exists() is allowed, resp.content[:2000]
    if not allowed:
        assert resp.status_code == 200 and b"Select a valid choice" in resp.content


@pytest.mark.django_db
def test_a_clerk_can_neither_move_a_token_nor_re_point_another_athletes_share():
    root = make_user("root", superuser=True)
    athlete = make_user("athlete")
    clerk = staff_with("clerk", "add_apitoken", "change_apitoken", "view_apitoken",
                       "add_share", "change_share", "view_share")
    client = logged_in(clerk)
    # Mint one's own token, then try to hand it to the superuser.
    token, _ = ApiToken.issue(user=clerk, name="mine")
    client.post(f"/admin/streams/apitoken/{token.pk}/change/", {"user": root.pk, "name": "mine", "scopes": "read",
                                                                 "is_active": "on"})
    token.refresh_from_db()
    assert token.user_id == clerk.pk
    # Another athlete's share: the clerk may not change its viewer to themself.
    share = Share.objects.create(owner=athlete, viewer=root)
    resp = client.post(f"/admin/streams/share/{share.pk}/change/", {"owner": athlete.pk, "viewer": clerk.pk})
    assert resp.status_code == 403
    share.refresh_from_db()
    assert share.viewer_id == root.pk


@pytest.mark.django_db
def test_the_shares_inline_on_another_athletes_page_is_read_only_for_a_clerk():
    athlete = make_user("athlete")
    clerk = staff_with("clerk", "change_user", "view_user", "add_share", "change_share", "view_share")
    page = logged_in(clerk).get(f"/admin/auth/user/{athlete.pk}/change/")
    assert page.status_code == 200
    inline = next(f for f in page.context["inline_admin_formsets"] if f.opts.model is Share)
    assert not inline.has_add_permission and not inline.has_change_permission
    own = logged_in(clerk).get(f"/admin/auth/user/{clerk.pk}/change/")
    inline = next(f for f in own.context["inline_admin_formsets"] if f.opts.model is Share)
    assert inline.has_add_permission


# --- item 6: an archive deletes only what it archived ---------------------------------------------
pytest_async = pytest.mark.django_db(transaction=True)


async def _archive(token: str, name: str):
    return await AsyncClient().post(f"/api/streams/{name}/archive", json.dumps({"delete_stream": True, "force": True}),
                                    content_type="application/json", **bearer(token))


def _during_preparation(monkeypatch, meanwhile):
    """Run ``meanwhile()`` after the archive read the stream and before it deletes it."""
    original = offload.run

    async def run(fn, *args, **kwargs):
        await meanwhile()
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(offload, "run", run)


@pytest_async
async def test_archive_does_not_delete_a_stream_someone_else_re_created_meanwhile(r, monkeypatch):
    b, b_token = await user_with_token("athlete-b")
    a, _ = await user_with_token("athlete-a")
    await store.stream_publish(name="ride", entries=RIDE, actor=actor(b))

    async def recreate_as_a():
        await store.streams_delete(names=["ride"], actor=actor(b))
        await store.stream_publish(name="ride", entries=RIDE[:3], actor=actor(a))

    _during_preparation(monkeypatch, recreate_as_a)
    resp = await _archive(b_token, "ride")
    assert resp.status_code == 201, resp.content
    assert resp.json()["athlete"] == "athlete-b" and resp.json()["stream_deleted"] is False
    info = (await store.stream_info_batch(names=["ride"]))["ride"]
    assert info is not None and info.length == 3 and info.meta.owner_id == a.pk


@pytest_async
async def test_archive_keeps_entries_published_after_its_read(r, monkeypatch):
    b, b_token = await user_with_token("athlete-b")
    await store.stream_publish(name="ride", entries=RIDE, actor=actor(b))
    later = []

    async def publish_more():
        later.extend(await store.stream_publish(name="ride", entries=RIDE[:2], actor=actor(b)))

    _during_preparation(monkeypatch, publish_more)
    resp = await _archive(b_token, "ride")
    assert resp.status_code == 201, resp.content
    assert resp.json()["sample_count"] == len(RIDE) and resp.json()["stream_deleted"] is False
    left = await store.stream_range(name="ride", count=None)
    assert [e.id for e in left] == later
    assert (await store.stream_meta(names=["ride"]))["ride"].owner_id == b.pk


@pytest_async
async def test_a_managers_archive_does_not_delete_a_stream_that_changed_hands(r, monkeypatch):
    a, _ = await user_with_token("athlete-a")
    c, _ = await user_with_token("athlete-c")

    def make_manager():
        user = make_user("mgr")
        user.user_permissions.add(Permission.objects.get(codename="manage_all_streams"))
        return ApiToken.issue(user=user)[1]

    mgr_token = await sync_to_async(make_manager)()
    await store.stream_publish(name="ride", entries=RIDE, actor=actor(a))

    async def recreate_as_c():
        await store.streams_delete(names=["ride"], actor=actor(a))
        await store.stream_publish(name="ride", entries=RIDE[:1], actor=actor(c))

    _during_preparation(monkeypatch, recreate_as_c)
    resp = await _archive(mgr_token, "ride")
    assert resp.status_code == 201, resp.content
    assert resp.json()["athlete"] == "athlete-a" and resp.json()["stream_deleted"] is False
    assert (await store.stream_meta(names=["ride"]))["ride"].owner_id == c.pk


@pytest_async
async def test_archive_with_nothing_newer_deletes_the_whole_stream(r):
    b, b_token = await user_with_token("athlete-b")
    await store.stream_publish(name="ride", entries=RIDE, actor=actor(b))
    resp = await _archive(b_token, "ride")
    assert resp.status_code == 201 and resp.json()["stream_deleted"] is True
    assert await store.streams_exist(names=["ride"]) == {"ride": False}
    assert (await store.stream_meta(names=["ride"]))["ride"].owner_id is None
    assert "ride" not in (await store.streams_list()).names


# --- item 7: offloaded work is bounded ----------------------------------------------------------
@pytest.fixture
def fresh_pool():
    offload.shutdown()
    yield
    offload.shutdown()


async def test_a_job_past_its_cpu_time_is_a_422_naming_the_limit(fresh_pool, settings, tmp_path):
    settings.OFFLOAD_PROCESSES = 1
    settings.OFFLOAD_JOB_TIMEOUT_MS = 300
    before = await offload.run(offload.spin_until, str(tmp_path))  # exists: returns at once
    with pytest.raises(offload.JobTooLong, match=r"OFFLOAD_JOB_TIMEOUT \(300 ms"):
        await offload.run(offload.spin_until, str(tmp_path / "never"), cpu=True)
    assert await offload.run(offload.spin_until, str(tmp_path)) == before  # the same worker goes on


@pytest_async
async def test_a_slow_workout_upload_answers_422_naming_the_limit(r, fresh_pool, settings, monkeypatch, tmp_path):
    _, token = await user_with_token("rider")
    settings.OFFLOAD_JOB_TIMEOUT_MS = 300
    # The upload's preparation made slow on purpose: it spins until a file that never appears.
    original = offload.run
    never = str(tmp_path / "never")

    async def slow(fn, *args, **kwargs):
        return await original(offload.spin_until, never, cpu=True)

    monkeypatch.setattr(offload, "run", slow)
    resp = await AsyncClient().post("/api/workouts", json.dumps(BODY), content_type="application/json", **bearer(token))
    assert resp.status_code == 422 and "OFFLOAD_JOB_TIMEOUT" in resp.json()["detail"], resp.content


@pytest_async
async def test_one_users_job_in_flight_makes_their_next_a_429_and_leaves_others_served(r, fresh_pool, settings):
    user_a, token_a = await user_with_token("athlete-a")
    _, token_b = await user_with_token("athlete-b")
    client = AsyncClient()
    with offload.user_job(user_a.pk):  # athlete A's upload is being prepared
        second = await client.post("/api/workouts", json.dumps(BODY), content_type="application/json", **bearer(token_a))
        other = await client.post("/api/workouts", json.dumps(BODY), content_type="application/json", **bearer(token_b))
    assert second.status_code == 429 and "OFFLOAD_JOBS_PER_USER=1" in second.json()["detail"], second.content
    assert other.status_code == 201, other.content
    after = await client.post("/api/workouts", json.dumps(BODY), content_type="application/json", **bearer(token_a))
    assert after.status_code == 201, after.content


async def test_another_users_job_runs_while_a_slow_one_holds_a_worker(fresh_pool, settings, tmp_path):
    """With the default pool, a job that never ends on its own does not make the next wait."""
    release = tmp_path / "release"
    slow = asyncio.ensure_future(offload.run(offload.spin_until, str(release)))
    try:
        done = tmp_path / "done"
        done.touch()
        quick = await asyncio.wait_for(offload.run(offload.spin_until, str(done)), timeout=60)
        assert not slow.done()
    finally:
        release.touch()
    assert await slow != quick  # two workers


# --- item 9: login throttling ---------------------------------------------------------------------
@pytest.mark.django_db
def test_the_sixth_bad_admin_login_is_refused_even_with_the_right_password(settings):
    make_user("admin", password="right", superuser=True)
    client = Client(REMOTE_ADDR="203.0.113.7")
    statuses = [client.post("/admin/login/?next=/admin/", {"username": "admin", "password": "wrong"}).status_code
                for _ in range(settings.AXES_FAILURE_LIMIT + 1)]
    # The form again with its error, until the 5th failure locks the pair out.
    assert statuses == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429, 429]
    locked = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": "right"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another address is not locked out by this one's failures (keyed by username + address).
    other = Client(REMOTE_ADDR="198.51.100.9")
    ok = other.post("/admin/login/?next=/admin/", {"username": "admin", "password": "right"})
    assert ok.status_code == 302 and "_auth_user_id" in other.session


# --- item 9: /metrics after trusted-proxy resolution -----------------------------------------------
async def _metrics(settings, *, peer: str, forwarded: str | None = None) -> int:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    status, _, _ = await asgi_response(http_scope("/metrics", headers=headers, client=(peer, 40000)))
    return status


@pytest.mark.parametrize("trusted,peer,forwarded,expected", [
    # Behind a private-range proxy that is not listed as trusted: the peer is the proxy, and
    # the forwarded client is unknown: closed.
    ("", "172.18.0.5", "203.0.113.50", 403),
    # Trusted: the client is the forwarded address, outside the allowed networks: closed.
    ("172.16.0.0/12", "172.18.0.5", "203.0.113.50", 403),
    # Trusted, and the forwarded client is inside: open.
    ("172.16.0.0/12", "172.18.0.5", "10.1.2.3", 200),
    # A direct private peer with no proxy header: open (Prometheus on the same network).
    ("", "10.1.2.3", None, 200),
])
async def test_metrics_is_closed_unless_the_client_after_proxy_resolution_is_allowed(
        r, settings, trusted, peer, forwarded, expected):
    import ipaddress

    settings.DEBUG = False
    settings.MONITORING_TOKEN = ""
    settings.TRUSTED_PROXIES = [ipaddress.ip_network(n) for n in trusted.split(",") if n]
    assert await _metrics(settings, peer=peer, forwarded=forwarded) == expected


def test_the_cluster_profile_trusts_its_balancer_and_the_balancer_keeps_metrics_closed():
    import ipaddress
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    balancer = compose["services"]["load-balancer"]["networks"]["edge"]["ipv4_address"]
    trusted = re.fullmatch(r"\$\{TRUSTED_PROXIES:-(.+)\}", compose["services"]["web-cluster"]["environment"]["TRUSTED_PROXIES"])
    assert trusted and ipaddress.ip_address(balancer) in ipaddress.ip_network(trusted.group(1))
    assert "edge" in compose["services"]["web-cluster"]["networks"]
    conf = (root / "deploy" / "nginx-cluster.conf").read_text()
    metrics = re.search(r"location = /metrics \{(.*?)\n    \}", conf, re.S)
    assert metrics and 'if ($http_authorization = "")' in metrics.group(1) and "return 403;" in metrics.group(1)


# --- item 9: the Content-Security-Policy (the browser's view: tests/test_pages_security.py) ---------
@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/login/", "/api/docs"])
def test_pages_carry_the_policy(path, settings):
    resp = Client().get(path)
    assert resp.status_code == 200
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "object-src 'none'" in policy and "frame-ancestors 'none'" in policy


async def test_the_live_page_runs_no_inline_script_and_its_policy_allows_none(r, settings):
    import re

    settings.STREAMS_PUBLIC_READ = True
    await store.stream_publish(name="ride", entries=RIDE[:2])
    # Through the production entry: the lean stack serves /live/ and /api/.
    status, headers, body = await asgi_response(http_scope("/live/ride"))
    assert status == 200
    scripts = re.findall(r"<script([^>]*)>", body.decode())
    # Scripts from this server, and the page's settings as JSON data (json_script), never code.
    assert scripts and all(' src="/static/' in attrs or 'type="application/json"' in attrs for attrs in scripts), scripts
    assert "unsafe-inline" not in headers["content-security-policy"].split("script-src", 1)[1].split(";")[0]
    status, headers, _ = await asgi_response(http_scope("/api/streams/ride"))
    assert status == 200 and "content-security-policy" not in headers  # JSON builds no policy (the hot path)


def test_compat_csp_middleware_hooks_run_without_the_mixin(rf):
    """django-csp 4.0's CSPMiddleware, its two hooks called directly (streams/core/compat.py
    ``django_middleware_hooks``, as LeanGuardMiddleware does): a lazy nonce, the header set."""
    from csp.middleware import CSPMiddleware
    from django.http import HttpResponse

    from streams.core.compat import django_middleware_hooks

    hooks = django_middleware_hooks(CSPMiddleware, lambda request: HttpResponse())
    request = rf.get("/live/x")
    hooks.request(request)
    nonce = str(request.csp_nonce)
    response = hooks.response(request, HttpResponse("<p>", content_type="text/html"))
    assert f"'nonce-{nonce}'" in response["Content-Security-Policy"]
