"""Who may do what: one table over every route and role (docs/security.md: "Who may do what").

A private stream ``priv`` and a public stream ``pub`` belong to ``owner``; ``viewer`` holds a
share from ``owner``; ``readonly`` is a token of ``owner`` with only the ``read`` scope;
``manager`` has ``streams.manage_all_streams``; ``other`` is just another athlete.
"""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import AsyncClient

from streams.access.identity import Actor
from streams.live.follow import MetaCache
from streams.models import ApiToken, Share
from streams.store import services as store
from tests.helpers import asgi_response, browser_ws_headers, http_scope
from tests.streams.sse_client import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ("anonymous", "owner", "other", "viewer", "readonly", "manager", "superuser")
RIDE = [{"t": str(i), "power": str(200 + i % 7)} for i in range(60)]


@pytest.fixture
async def world(r, settings):
    settings.STREAMS_PUBLIC_READ = False

    def make():
        User = get_user_model()
        users = {name: User.objects.create_user(name) for name in ("owner", "other", "viewer", "manager")}
        users["superuser"] = User.objects.create_superuser("root", password="x")
        users["manager"].user_permissions.add(Permission.objects.get(codename="manage_all_streams"))
        Share.objects.create(owner=users["owner"], viewer=users["viewer"])
        tokens = {name: ApiToken.issue(user=user)[1] for name, user in users.items()}
        tokens["readonly"] = ApiToken.issue(user=users["owner"], scopes=["read"])[1]
        return users, tokens

    users, tokens = await sync_to_async(make)()
    owner = Actor(user_id=users["owner"].pk, username="owner")
    await store.stream_publish(name="priv", entries=RIDE, actor=owner)
    await store.stream_settings_update(name="pub", actor=owner, visibility="public")
    await store.stream_publish(name="pub", entries=RIDE[:2], actor=owner)
    return users, tokens


def headers(tokens, role):
    return {} if role == "anonymous" else {"Authorization": f"Bearer {tokens[role]}"}


async def call(tokens, role, method, path, body=None):
    client = AsyncClient()
    kwargs = {"headers": headers(tokens, role)}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return await getattr(client, method)(path, **kwargs)


def row(route, *statuses):
    return [pytest.param(route, role, status, id=f"{route}-{role}") for role, status in zip(ROLES, statuses)]


#            route                        anon owner other viewer readonly manager super
TABLE = [
    *row("info priv",                      404, 200, 404, 200, 200, 200, 200),
    *row("info pub",                       200, 200, 200, 200, 200, 200, 200),
    *row("range priv",                     404, 200, 404, 200, 200, 200, 200),
    *row("sse priv",                       404, 200, 404, 200, 200, 200, 200),
    *row("multi-sse priv,pub",             404, 200, 404, 200, 200, 200, 200),
    *row("front page",                     200, 200, 200, 200, 200, 200, 200),
    *row("ride page",                      200, 200, 200, 200, 200, 200, 200),
    *row("live priv",                      404, 200, 404, 200, 200, 200, 200),
    *row("group live priv,pub",            404, 200, 404, 200, 200, 200, 200),
    *row("metrics priv",                   404, 200, 404, 200, 200, 200, 200),
    *row("metrics pub",                    200, 200, 200, 200, 200, 200, 200),
    *row("metrics-sse priv",               404, 200, 404, 200, 200, 200, 200),
    *row("group metrics-sse priv,pub",     404, 200, 404, 200, 200, 200, 200),
    *row("group now priv,pub",             404, 200, 404, 200, 200, 200, 200),
    *row("publish priv",                   401, 201, 404, 403, 403, 201, 201),
    *row("publish pub",                    401, 201, 403, 403, 403, 201, 201),
    *row("publish new",                    401, 201, 201, 201, 403, 201, 201),
    *row("settings priv",                  401, 200, 404, 403, 403, 200, 200),
    *row("settings new",                   401, 201, 201, 201, 403, 201, 201),
    *row("delete priv",                    401, 204, 404, 403, 403, 204, 204),
    *row("archive priv",                   401, 201, 404, 403, 403, 201, 201),
    *row("end priv",                       401, 200, 404, 403, 403, 200, 200),
    *row("markers add priv",               401, 201, 404, 403, 403, 201, 201),
    *row("markers list priv",              404, 200, 404, 200, 200, 200, 200),
    *row("rides list",                     200, 200, 200, 200, 200, 200, 200),
    *row("shares create",                  401, 201, 201, 201, 403, 201, 201),
    *row("shares list",                    401, 200, 200, 200, 200, 200, 200),
    *row("shares revoke viewer",           401, 204, 404, 404, 403, 404, 404),
    *row("fit import for owner",           401, 201, 403, 403, 403, 403, 201),
    # The read rule of GET /api/workouts/{id} (WORKOUT_READ below): a manager of streams is no reader of workouts.
    *row("fit export owner's workout",     401, 200, 404, 200, 200, 404, 200),
    *row("tcx export owner's workout",     401, 200, 404, 200, 200, 404, 200),
]


async def run_route(world, route, role):
    users, tokens = world
    h = headers(tokens, role)
    match route:
        case "info priv":
            return (await call(tokens, role, "get", "/api/streams/priv")).status_code
        case "info pub":
            return (await call(tokens, role, "get", "/api/streams/pub")).status_code
        case "range priv":
            return (await call(tokens, role, "get", "/api/streams/priv/events?count=5")).status_code
        case "sse priv" | "multi-sse priv,pub" | "metrics-sse priv" | "group metrics-sse priv,pub":
            path = {
                "sse priv": "/api/streams/priv/sse", "multi-sse priv,pub": "/api/sse?streams=priv,pub",
                "metrics-sse priv": "/api/streams/priv/metrics/sse",
                "group metrics-sse priv,pub": "/api/metrics/sse?streams=priv,pub",
            }[route]
            c = await SSEClient(path, headers=h).connect()
            try:
                return c.status
            finally:
                await c.close()
        case "group now priv,pub":  # issue 24's group endpoint: off-target riders first
            return (await call(tokens, role, "get", "/api/metrics?streams=priv,pub&sort=off_target")).status_code
        case "front page":
            return (await call(tokens, role, "get", "/")).status_code
        case "ride page":  # the publisher: a sign-in link and a token field for whoever has no session
            return (await call(tokens, role, "get", "/ride/")).status_code
        case "live priv":
            return (await call(tokens, role, "get", "/live/priv")).status_code
        case "group live priv,pub":
            return (await call(tokens, role, "get", "/live/?streams=priv,pub")).status_code
        case "metrics priv" | "metrics pub":
            name = route.split()[1]
            return (await call(tokens, role, "get", f"/api/streams/{name}/metrics")).status_code
        case "publish priv" | "publish pub" | "publish new":
            # Through the production ASGI entry: the publish route is served at its edge
            # (streamsite/server/direct.py), not by Django's handler.
            name = route.split()[1]
            body = json.dumps({"power": 1}).encode()
            auth = [(b"authorization", h["Authorization"].encode())] if h else []
            scope = http_scope(f"/api/streams/{name}/events", method="POST",
                               headers=[(b"content-type", b"application/json"), *auth])
            return (await asgi_response(scope, body))[0]
        case "settings priv" | "settings new":
            name = route.split()[1]
            return (await call(tokens, role, "put", f"/api/streams/{name}", {"ftp": 250})).status_code
        case "delete priv":
            return (await call(tokens, role, "delete", "/api/streams/priv")).status_code
        case "archive priv":  # force: archived before its ride ended (docs/rides.md)
            return (await call(tokens, role, "post", "/api/streams/priv/archive", {"title": "x", "force": True})).status_code
        case "end priv":
            return (await call(tokens, role, "post", "/api/streams/priv/end")).status_code
        case "markers add priv":  # viewer: a share without the markers grant (docs/security.md)
            return (await call(tokens, role, "post", "/api/streams/priv/markers", {"label": "lap"})).status_code
        case "markers list priv":
            return (await call(tokens, role, "get", "/api/streams/priv/markers")).status_code
        case "rides list":
            return (await call(tokens, role, "get", "/api/rides")).status_code
        case "shares create":
            target = "other" if role != "other" else "viewer"
            return (await call(tokens, role, "post", "/api/shares", {"viewer": target})).status_code
        case "shares list":
            return (await call(tokens, role, "get", "/api/shares")).status_code
        case "shares revoke viewer":  # only the owner holds a share with "viewer"
            return (await call(tokens, role, "delete", "/api/shares/viewer")).status_code
        case "fit import for owner":
            import datetime as dt

            from django.core.files.uploadedfile import SimpleUploadedFile

            from tests.workouts.fitwriter import write_fit

            rows = [{"t": float(i), "power": 200, "heart_rate": 140, "cadence": 90, "speed": 8.0,
                     "distance": 8.0 * i, "altitude": 100.0} for i in range(60)]
            data = write_fit(dt.datetime(2026, 11, 3, 17, tzinfo=dt.UTC), rows)
            resp = await AsyncClient().post("/api/workouts/import", {
                "file": SimpleUploadedFile("ride.fit", data), "athlete": "owner",
            }, headers=h)
            return resp.status_code
        case "fit export owner's workout":
            wid = await owners_workout(tokens)
            resp = await call(tokens, role, "get", f"/api/workouts/{wid}/fit")
            if resp.status_code == 200:
                assert resp["Content-Type"] == "application/vnd.ant.fit" and resp.content[8:12] == b".FIT"
            return resp.status_code
        case "tcx export owner's workout":
            wid = await owners_workout(tokens)
            resp = await call(tokens, role, "get", f"/api/workouts/{wid}/tcx")
            if resp.status_code == 200:
                assert resp["Content-Type"] == "application/vnd.garmin.tcx+xml" and b"<Trackpoint>" in resp.content
            return resp.status_code
    raise AssertionError(route)


async def owners_workout(tokens) -> int:
    created = await call(tokens, "owner", "post", "/api/workouts", {
        "title": "t", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0, 1, 2], "power": [100, 200, 300]},
    })
    assert created.status_code == 201
    return created.json()["id"]


@pytest.mark.parametrize("route,role,expected", TABLE)
async def test_who_may_do_what(world, route, role, expected):
    assert await run_route(world, route, role) == expected


# The roles the main table has no column for: a viewer whose share grants markers ("coach"),
# that coach's read-only token, and a publish-only token of the owner (a rider's device).
MARKER_ROLES = {  # role: (POST markers, GET markers)
    "coach": (201, 200), "coach-readonly": (403, 200), "owner-publish-only": (201, 403),
}


@pytest.mark.parametrize("role", MARKER_ROLES)
async def test_who_may_mark_beyond_the_table(world, role):
    users, tokens = world

    def make():
        coach = get_user_model().objects.create_user("coach")
        Share.objects.create(owner=users["owner"], viewer=coach, may_mark=True)
        return {"coach": ApiToken.issue(user=coach)[1], "coach-readonly": ApiToken.issue(user=coach, scopes=["read"])[1],
                "owner-publish-only": ApiToken.issue(user=users["owner"], scopes=["publish"])[1]}

    extra = await sync_to_async(make)()
    add = await call(extra, role, "post", "/api/streams/priv/markers", {"label": "lap"})
    listing = await call(extra, role, "get", "/api/streams/priv/markers")
    assert (add.status_code, listing.status_code) == MARKER_ROLES[role]


# Listings and batches: what each role sees of the private stream (others as absent).
SEES_PRIV = {"anonymous": False, "owner": True, "other": False, "viewer": True, "readonly": True,
             "manager": True, "superuser": True}


@pytest.mark.parametrize("role", ROLES)
async def test_listings_and_batches_show_only_readable_streams(world, role):
    _, tokens = world
    sees = SEES_PRIV[role]
    listed = [s["name"] for s in (await call(tokens, role, "get", "/api/streams")).json()["streams"]]
    assert listed == (["priv", "pub"] if sees else ["pub"])
    info = (await call(tokens, role, "post", "/api/batch/streams/info", {"names": ["priv", "pub"]})).json()
    assert (info["streams"]["priv"] is not None) is sees and info["streams"]["pub"]["owner"] == "owner"
    exists = (await call(tokens, role, "post", "/api/batch/streams/exists", {"names": ["priv", "pub"]})).json()
    assert exists["exists"] == {"priv": sees, "pub": True}
    rides = [ride["name"] for ride in (await call(tokens, role, "get", "/api/rides")).json()["rides"]]
    assert sorted(rides) == (["priv", "pub"] if sees else ["pub"])


BATCH_DELETE = {  # role: (status, deleted, forbidden)
    "anonymous": (401, None, None), "owner": (200, 2, []), "other": (200, 0, ["pub"]),
    "viewer": (200, 0, ["priv", "pub"]), "readonly": (403, None, None), "manager": (200, 2, []),
    "superuser": (200, 2, []),
}


@pytest.mark.parametrize("role", ROLES)
async def test_the_front_page_counts_only_the_streams_the_caller_may_read(world, role):
    """Its rides come from GET /api/rides (the read rule of the listings); the page itself
    says how many streams the caller may read."""
    html = (await call(tokens_of(world), role, "get", "/")).content.decode()
    readable = 1 if role in ("anonymous", "other") else 2  # pub; or priv and pub
    assert f'data-count="{readable}"' in html


def tokens_of(world):
    return world[1]


@pytest.mark.parametrize("role", [r for r in ROLES if r != "readonly"])
async def test_the_ride_page_by_role(world, role):
    """/ride/ answers everyone (the table); a session publishes as its user, anyone else gets
    the sign-in link and the field for an API token kept in the browser."""
    users, _ = world
    client = AsyncClient()
    if role != "anonymous":
        await client.aforce_login(users[role])
    html = (await client.get("/ride/")).content.decode()
    if role == "anonymous":
        assert 'href="/admin/login/?next=/ride/"' in html and 'id="token"' in html
    else:
        assert f"Publishing as <b>{users[role].username}</b>" in html and 'id="token"' not in html


@pytest.mark.parametrize("role", ROLES)
async def test_batch_delete_deletes_only_what_the_caller_manages(world, role):
    _, tokens = world
    status, deleted, forbidden = BATCH_DELETE[role]
    resp = await call(tokens, role, "post", "/api/batch/streams/delete", {"names": ["priv", "pub", "absent"]})
    assert resp.status_code == status
    if status == 200:
        assert resp.json() == {"deleted": deleted, "forbidden": forbidden}


WS_FOLLOWS = {"anonymous": 4404, "owner": None, "other": 4404, "viewer": None, "readonly": None,
              "manager": None, "superuser": None}


SESSION_ROLES = [r for r in ROLES if r != "readonly"]  # a read-only token has no session form


@pytest.mark.parametrize("socket", ["entries", "metrics"])
@pytest.mark.parametrize(
    "how,role",
    [("token", r) for r in ROLES] + [("session", r) for r in SESSION_ROLES],
)
async def test_websocket_follow_of_a_private_stream(world, how, role, socket):
    """Follows by token (?token=) and by a browser's session cookie (read once at the
    handshake: streamsite.routing.SessionUser) get the same answers, for the entries and for the
    live metrics (ws/streams/{name}/metrics/)."""
    from streamsite.asgi import application

    users, tokens = world
    headers = []
    query = "?from=start"
    if role != "anonymous" and how == "token":
        query = f"?token={tokens[role]}&from=start"
    elif role != "anonymous":
        headers = await browser_ws_headers(users[role])
    path = "/ws/streams/priv/" if socket == "entries" else "/ws/streams/priv/metrics/"
    ws = WebsocketCommunicator(application, path + query, headers=headers)
    connected, _ = await ws.connect()
    try:
        assert connected
        first = await ws.receive_json_from(5)
        if WS_FOLLOWS[role] is None and socket == "entries":
            assert first["data"] == RIDE[0]
        elif WS_FOLLOWS[role] is None:
            assert first["event"] == "metrics" and first["data"]["samples"] == len(RIDE)
        else:
            assert "not found" in first["error"]
            assert await ws.receive_output(5) == {"type": "websocket.close", "code": WS_FOLLOWS[role]}
    finally:
        await ws.disconnect()


WORKOUT_READ = {"anonymous": 401, "owner": 200, "other": 404, "viewer": 200, "readonly": 200,
                "manager": 404, "superuser": 200}
WORKOUT_PAGE = {**WORKOUT_READ, "anonymous": 302}  # the page sends an anonymous visitor to the login


@pytest.mark.parametrize("role", ROLES)
async def test_workouts_belong_to_their_athlete(world, role):
    users, tokens = world
    created = await call(tokens, "owner", "post", "/api/workouts",
                         {"title": "t", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0, 1], "power": [1, 2]}})
    assert created.status_code == 201
    wid = created.json()["id"]
    assert (await call(tokens, role, "get", f"/api/workouts/{wid}")).status_code == WORKOUT_READ[role]
    page = await call(tokens, role, "get", f"/workouts/{wid}")
    assert page.status_code == WORKOUT_PAGE[role]
    if page.status_code == 302:
        assert page["Location"] == f"/admin/login/?next=/workouts/{wid}"
    listing = await call(tokens, role, "get", "/api/workouts")
    if WORKOUT_READ[role] == 401:
        assert listing.status_code == 401
    else:
        assert listing.json()["count"] == (1 if WORKOUT_READ[role] == 200 else 0)
    for_owner = await call(tokens, role, "post", "/api/workouts",
                           {"title": "t", "athlete": "owner", "started_at": "2026-11-03T17:00:00Z", "samples": {"t": [0]}})
    expected = {"anonymous": 401, "owner": 201, "readonly": 403, "superuser": 201}.get(role, 403)
    assert for_owner.status_code == expected


async def test_archive_gives_the_workout_to_the_streams_owner(world):
    _, tokens = world
    resp = await call(tokens, "manager", "post", "/api/streams/priv/archive", {"title": "by manager", "force": True})
    assert resp.status_code == 201 and resp.json()["athlete"] == "owner"
    resp = await call(tokens, "manager", "post", "/api/streams/priv/archive", {"athlete": "other", "force": True})
    assert resp.status_code == 201 and resp.json()["athlete"] == "other"
    resp = await call(tokens, "owner", "post", "/api/streams/priv/archive", {"athlete": "other", "force": True})
    assert resp.status_code == 403


async def test_info_shows_owner_and_visibility_and_settings_change_them(world):
    _, tokens = world
    body = (await call(tokens, "owner", "get", "/api/streams/priv")).json()
    assert (body["owner"], body["visibility"], body["length"]) == ("owner", "private", len(RIDE))
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"visibility": "public", "ftp": 260})
    assert resp.status_code == 200 and (resp.json()["visibility"], resp.json()["ftp"]) == ("public", 260)
    assert (await call(tokens, "anonymous", "get", "/api/streams/priv")).status_code == 200
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"ftp": None})
    assert resp.json()["ftp"] is None and resp.json()["visibility"] == "public"
    resp = await call(tokens, "owner", "put", "/api/streams/priv", {"visibility": "secret"})
    assert resp.status_code == 400 and "visibility" in resp.json()["detail"]
    resp = await call(tokens, "other", "put", "/api/streams/early", {"visibility": "private"})
    assert resp.status_code == 201 and resp.json()["length"] == 0 and resp.json()["owner"] == "other"


async def test_unowned_streams_are_managed_by_managers_and_claimed_by_command(world, settings):
    from django.core.management import call_command

    _, tokens = world
    await store.stream_publish(name="device", entries=[{"x": "1"}])  # a device's own XADD: no owner
    assert (await call(tokens, "owner", "get", "/api/streams/device")).status_code == 404
    assert (await call(tokens, "owner", "post", "/api/streams/device/events", {"x": 2})).status_code == 404
    assert (await call(tokens, "manager", "post", "/api/streams/device/events", {"x": 2})).status_code == 201
    settings.STREAMS_PUBLIC_READ = True
    assert (await call(tokens, "anonymous", "get", "/api/streams/device")).status_code == 200
    assert (await call(tokens, "owner", "post", "/api/streams/device/events", {"x": 2})).status_code == 403
    await sync_to_async(call_command)("claim_stream", "device", "owner")
    assert (await call(tokens, "owner", "post", "/api/streams/device/events", {"x": 3})).status_code == 201
    assert (await call(tokens, "owner", "get", "/api/streams/device")).json()["owner"] == "owner"


async def test_a_known_token_costs_no_database_query(world, monkeypatch):
    from django.db.backends import utils

    _, tokens = world
    assert (await call(tokens, "owner", "get", "/api/streams")).status_code == 200  # loads the identity
    queries = []  # every SQL statement, from any thread (sync_to_async runs them elsewhere)
    for method in ("execute", "executemany"):
        original = getattr(utils.CursorWrapper, method)
        monkeypatch.setattr(utils.CursorWrapper, method,
                            lambda self, sql, *a, _o=original, **k: (queries.append(sql), _o(self, sql, *a, **k))[1])
    assert (await call(tokens, "readonly", "get", "/api/streams")).status_code == 200
    assert queries, "a token not seen before is loaded from the database (and counted)"
    queries.clear()
    assert (await call(tokens, "owner", "get", "/api/streams")).status_code == 200
    assert (await call(tokens, "owner", "post", "/api/streams/priv/events", {"p": 1})).status_code == 201
    assert (await call(tokens, "owner", "get", "/api/streams/priv/events")).status_code == 200
    assert queries == []


async def test_deactivation_and_expiry_take_effect(world, settings):
    from django.utils import timezone

    from streams.access.identity import identity_cache

    users, tokens = world
    assert (await call(tokens, "other", "get", "/api/streams")).status_code == 200
    # Another process deactivates the token: this one sees it when its cache entry expires.
    await ApiToken.objects.filter(user=users["other"]).aupdate(is_active=False)  # no signal: like elsewhere
    assert (await call(tokens, "other", "get", "/api/streams")).status_code == 200  # still cached
    identity_cache.clear()  # = AUTH_CACHE_TTL passed
    assert (await call(tokens, "other", "get", "/api/streams")).status_code == 401
    await ApiToken.objects.filter(user=users["viewer"]).aupdate(expires_at=timezone.now())
    identity_cache.clear()
    resp = await call(tokens, "viewer", "get", "/api/streams")
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]


async def test_out_of_scope_call_names_the_scope(world):
    _, tokens = world
    resp = await call(tokens, "readonly", "delete", "/api/streams/priv")
    assert resp.status_code == 403 and "'manage'" in resp.json()["detail"]


async def test_revoking_a_share_ends_the_viewers_follows(world, settings):
    settings.ACCESS_RECHECK_INTERVAL_MS = 200
    users, tokens = world
    sse = await SSEClient("/api/streams/priv/sse", headers=headers(tokens, "viewer")).connect()
    metrics = await SSEClient("/api/metrics/sse?streams=priv,pub", headers=headers(tokens, "viewer")).connect()
    from streamsite.asgi import application

    ws = WebsocketCommunicator(application, f"/ws/streams/priv/?token={tokens['viewer']}")
    assert (await ws.connect())[0]
    ws_metrics = WebsocketCommunicator(application, f"/ws/streams/priv/metrics/?token={tokens['viewer']}")
    assert (await ws_metrics.connect())[0]
    try:
        assert sse.status == 200
        assert (await ws_metrics.receive_json_from(10))["event"] == "metrics"
        resp = await call(tokens, "owner", "delete", "/api/shares/viewer")
        assert resp.status_code == 204
        ended = [e for e in await sse.events(1, timeout=10) if e.event == "forbidden"]
        assert ended and "revoked" in ended[0].json()["detail"]
        seen = []  # the group metrics connection: its snapshots, then the end
        while not seen or seen[-1].event == "metrics":
            seen.append(await metrics.next_event(timeout=10))
            if seen[-1].event == "message":
                seen.pop()  # the retry line, a heartbeat
        assert seen[-1].event == "forbidden" and "revoked" in seen[-1].json()["detail"]
        assert (await ws.receive_json_from(10))["event"] == "forbidden"
        assert await ws.receive_output(5) == {"type": "websocket.close", "code": 4403}
        ended = await ws_metrics.receive_json_from(10)
        assert ended["event"] == "forbidden" and "revoked" in ended["detail"]
        assert await ws_metrics.receive_output(5) == {"type": "websocket.close", "code": 4403}
    finally:
        await sse.close()
        await metrics.close()
        await ws.disconnect()
        await ws_metrics.disconnect()


async def test_a_write_through_this_process_is_read_again_at_once(world, settings):
    """The metadata copy behind access re-checks and live metrics is dropped by a write made
    here (a stream made private, deleted and made again by someone else), not served for the
    rest of its interval."""
    from streams.engine.context import redis_context

    settings.ACCESS_RECHECK_INTERVAL_MS = 6000
    users, tokens = world
    meta = MetaCache.of(await redis_context())
    assert (await meta.get(("pub",)))["pub"].visibility == "public"
    assert (await call(tokens, "owner", "put", "/api/streams/pub", {"visibility": "private"})).status_code == 200
    assert (await meta.get(("pub",)))["pub"].visibility == "private"
    assert (await call(tokens, "owner", "delete", "/api/streams/pub")).status_code == 204
    assert (await call(tokens, "other", "post", "/api/streams/pub/events", {"x": 1})).status_code == 201
    assert (await meta.get(("pub",)))["pub"].owner_id == users["other"].pk


async def test_an_access_recheck_that_cannot_reach_redis_keeps_the_follow(world, settings, caplog, monkeypatch):
    """An unplanned failover can keep a slot unserved longer than the node map's redirect
    deadline: a re-check then cannot read the visibility, and the follow goes on (CI once saw
    listeners end there) until a re-check can. The same rule with Redis refuses."""
    from dataclasses import replace

    from streams.access.identity import ANONYMOUS
    from streams.engine.context import close_redis_context
    from streams.live import follow as live
    from streams.live.follow import access_guard

    assert (await access_guard(ANONYMOUS, ("priv",))()).reason == "forbidden"
    await close_redis_context()
    settings.REDIS = replace(settings.REDIS, url="redis://127.0.0.1:1/0", pool_min=0, blocking_pool_min=0)
    monkeypatch.setattr(live, "_postponed_log", {"at": float("-inf"), "since": 0})
    assert await access_guard(ANONYMOUS, ("not-read-before",))() is None  # go on
    assert await access_guard(ANONYMOUS, ("not-read-either",))() is None
    warned = [m for m in caplog.messages if "access re-checks postponed" in m]
    assert len(warned) == 1 and "not-read-before" in warned[0]  # one warning per interval, not per listener


async def test_websocket_publish_stops_when_the_token_is_revoked(world):
    from streams.access.identity import identity_cache
    from streamsite.asgi import application

    users, tokens = world
    ws = WebsocketCommunicator(application, f"/ws/streams/priv/?token={tokens['owner']}")
    assert (await ws.connect())[0]
    try:
        await ws.send_to(text_data=json.dumps({"p": 1}))
        replies = [await ws.receive_json_from(5) for _ in range(2)]  # the ack and the echo
        assert any("ids" in m for m in replies)
        await ApiToken.objects.filter(user=users["owner"]).aupdate(is_active=False)
        identity_cache.clear()  # = AUTH_CACHE_TTL passed
        await ws.send_to(text_data=json.dumps({"p": 2}))
        frames = []
        while True:
            out = await ws.receive_output(5)
            frames.append(out)
            if out["type"] == "websocket.close":
                break
        assert any("no longer valid" in f.get("text", "") for f in frames)
        assert frames[-1]["code"] == 4401
    finally:
        await ws.disconnect()


async def test_a_publish_only_device_token_publishes_over_websocket_without_following(world):
    from streamsite.asgi import application

    users, _ = world
    device_token = await sync_to_async(lambda: ApiToken.issue(user=users["other"], scopes=["publish"])[1])()
    ws = WebsocketCommunicator(application, f"/ws/streams/trainer/?token={device_token}")
    assert (await ws.connect())[0]
    try:
        await ws.send_to(text_data=json.dumps({"power": 300}))
        ack = await ws.receive_json_from(5)
        assert len(ack["ids"]) == 1
        assert await ws.receive_nothing(0.2)  # not following: no echo of its own entry
    finally:
        await ws.disconnect()
    info = await call({"o": (await sync_to_async(lambda: ApiToken.issue(user=users["other"])[1])())}, "o", "get",
                      "/api/streams/trainer")
    assert info.json()["owner"] == "other"
    ws = WebsocketCommunicator(application, f"/ws/streams/priv/?token={device_token}")  # someone else's stream
    assert (await ws.connect())[0]
    try:
        assert "not found" in (await ws.receive_json_from(5))["error"]
    finally:
        await ws.disconnect()
