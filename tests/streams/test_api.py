import json
from dataclasses import replace

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from streams.models import ApiToken
from tests.helpers import bearer, make_user, user_with_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def token(r):
    return (await user_with_token("writer"))[1]


@pytest.fixture
def client():
    return AsyncClient()


auth = bearer


async def publish(client, token, name, body):
    return await client.post(
        f"/api/streams/{name}/events", data=json.dumps(body), content_type="application/json", **auth(token)
    )


async def test_publish_then_read_back(client, token):
    resp = await publish(client, token, "ride-1", [{"power": 250, "hr": 140.5, "ok": True}, {"power": 0}])
    assert resp.status_code == 201, resp.content
    ids = resp.json()["ids"]
    assert len(ids) == 2
    resp = await client.get("/api/streams/ride-1/events", **auth(token))
    assert resp.status_code == 200
    body = resp.json()
    assert body["name"] == "ride-1"
    assert body["events"][0] == {"id": ids[0], "data": {"power": "250", "hr": "140.5", "ok": "true"}}
    resp = await client.get(f"/api/streams/ride-1/events?start=({ids[0]}&count=5", **auth(token))
    assert [e["id"] for e in resp.json()["events"]] == [ids[1]]


async def test_list_and_info(client, token):
    await publish(client, token, "b", {"x": 1})
    await publish(client, token, "a", [{"x": 1}, {"x": 2}])
    resp = await client.get("/api/streams", **auth(token))
    assert resp.json() == {"count": 2, "streams": [{"name": "a"}, {"name": "b"}]}
    resp = await client.get("/api/streams?info=true&prefix=a", **auth(token))
    (a,) = resp.json()["streams"]
    assert a["name"] == "a" and a["length"] == 2 and a["first_id"] < a["last_id"]
    resp = await client.get("/api/streams/a", **auth(token))
    assert resp.status_code == 200 and resp.json()["length"] == 2


async def test_missing_stream_is_404_with_detail(client, token):
    for path in ["/api/streams/nope", "/api/streams/nope/events"]:
        resp = await client.get(path, **auth(token))
        assert resp.status_code == 404
        assert "nope" in resp.json()["detail"]
    resp = await client.delete("/api/streams/nope", **auth(token))
    assert resp.status_code == 404


async def test_delete(client, token):
    await publish(client, token, "gone", {"x": 1})
    resp = await client.delete("/api/streams/gone", **auth(token))
    assert resp.status_code == 204
    assert (await client.get("/api/streams", **auth(token))).json()["count"] == 0


async def test_batch_endpoints(client, token):
    await publish(client, token, "a", {"x": 1})
    resp = await client.post("/api/batch/streams/info", {"names": ["a", "b"]}, content_type="application/json", **auth(token))
    streams = resp.json()["streams"]
    assert streams["b"] is None and streams["a"]["length"] == 1
    resp = await client.post("/api/batch/streams/exists", {"names": ["a", "b"]}, content_type="application/json", **auth(token))
    assert resp.json() == {"exists": {"a": True, "b": False}}
    resp = await client.post("/api/batch/streams/delete", {"names": ["a", "b"]}, content_type="application/json", **auth(token))
    assert resp.json() == {"deleted": 1, "forbidden": []}


@pytest.mark.parametrize(
    "method,path,body,needle",
    [
        ("get", "/api/streams/bad%20name", None, "invalid stream name"),
        ("get", "/api/streams/_x/events", None, "invalid stream name"),
        ("get", "/api/streams/a/events?start=yesterday", None, "invalid start id"),
        ("get", "/api/streams/a/events?count=5000", None, "count"),
        # 20 digits pass the pattern but not Redis' 64-bit halves (was a 500)
        ("get", "/api/streams/a/events?start=99999999999999999999", None, "invalid start id"),
        ("get", "/api/streams/a/events?end=1-18446744073709551616", None, "invalid end id"),
        ("get", "/api/streams/a/sse?last_event_id=18446744073709551616-0", None, "invalid Last-Event-ID"),
        ("get", "/api/streams/a/events?count=abc", None, "count"),
        ("get", "/api/streams?limit=0", None, "limit"),
        ("post", "/api/streams/a/events", "not json", "not valid JSON"),
        ("post", "/api/streams/a/events", "[]", "empty array"),
        ("post", "/api/streams/a/events", "42", "JSON object or an array"),
        ("post", "/api/streams/a/events", '{"p": {"nested": 1}}', "field 'p'"),
        ("post", "/api/streams/a/events", '[{"p": 1}, {"q": [1]}]', "entry 1"),
        ("post", "/api/streams/a/events", "{}", "at least one field"),
        ("post", "/api/streams/a/events", json.dumps({f"f{i}": 1 for i in range(101)}), "101 fields"),
        ("post", "/api/streams/a/events", json.dumps([{"x": 1}] * 1001), "1001 entries"),
        ("post", "/api/batch/streams/info", '{"names": ["ok", "no way"]}', "invalid stream name"),
        ("post", "/api/batch/streams/info", '{"names": "a"}', "names"),
        ("post", "/api/batch/streams/info", json.dumps({"names": ["a"] * 1001}), "names"),
        ("post", "/api/batch/streams/exists", "{}", "names"),
    ],
)
async def test_bad_input_is_400_naming_the_problem(client, token, method, path, body, needle):
    kwargs = auth(token)
    if method == "get":
        resp = await client.get(path, **kwargs)
    else:
        resp = await client.post(path, body, content_type="application/json", **kwargs)
    assert resp.status_code == 400, resp.content
    assert needle in resp.json()["detail"]


async def test_largest_stream_ids_are_accepted(client, token):
    await client.post("/api/streams/a/events", '{"x": 1}', content_type="application/json", **auth(token))
    top = "18446744073709551615"
    resp = await client.get(f"/api/streams/a/events?start={top}-{top}&end=%2B", **auth(token))
    assert resp.status_code == 200 and resp.json()["events"] == []


async def test_body_over_one_mib_is_413(client, token):
    big = json.dumps([{"x": "y" * 1000}] * 1100)
    resp = await client.post("/api/streams/a/events", big, content_type="application/json", **auth(token))
    assert resp.status_code == 413
    assert "1 MiB" in resp.json()["detail"]


async def test_writes_need_a_valid_token(client, token, r):
    resp = await client.post("/api/streams/a/events", "{}", content_type="application/json")
    assert resp.status_code == 401 and "Bearer" in resp.json()["detail"]
    resp = await client.post("/api/streams/a/events", '{"x": 1}', content_type="application/json", **auth("sst_wrong"))
    assert resp.status_code == 401 and "invalid" in resp.json()["detail"]
    resp = await client.delete("/api/streams/a")
    assert resp.status_code == 401
    resp = await client.post("/api/batch/streams/delete", {"names": ["a"]}, content_type="application/json")
    assert resp.status_code == 401


async def test_inactive_token_is_refused(client, token):
    await ApiToken.objects.all().aupdate(is_active=False)
    resp = await publish(client, token, "a", {"x": 1})
    assert resp.status_code == 401


async def test_session_users_write_as_themselves(client, r):
    def users():
        make_user("staff", password="pw", staff=True)
        make_user("plain", password="pw")

    await sync_to_async(users)()
    resp = await client.post("/api/streams/a/events", '{"x": 1}', content_type="application/json")
    assert resp.status_code == 401
    await client.alogin(username="plain", password="pw")
    resp = await client.post("/api/streams/a/events", '{"x": 1}', content_type="application/json")
    assert resp.status_code == 201
    assert (await client.get("/api/streams/a")).json()["owner"] == "plain"
    await client.alogin(username="staff", password="pw")  # staff is no stream manager by itself
    resp = await client.post("/api/streams/a/events", '{"x": 1}', content_type="application/json")
    assert resp.status_code in (403, 404)


async def test_anonymous_lists_only_public_streams(client, token, settings):
    settings.STREAMS_PUBLIC_READ = False
    await publish(client, token, "mine", {"x": 1})  # private: STREAMS_PUBLIC_READ is off
    assert (await client.get("/api/streams")).json() == {"count": 0, "streams": []}
    assert (await client.get("/api/streams", **auth(token))).json()["count"] == 1
    settings.STREAMS_PUBLIC_READ = True
    await publish(client, token, "open", {"x": 1})
    assert (await client.get("/api/streams")).json()["streams"] == [{"name": "open"}]


async def test_redis_unreachable_is_503(client, token, settings):
    settings.REDIS = replace(settings.REDIS, url="redis://127.0.0.1:1/0", pool_min=0, blocking_pool_min=0)
    resp = await client.get("/api/streams", **auth(token))
    assert resp.status_code == 503
    assert "redis unavailable" in resp.json()["detail"]
    resp = await publish(client, token, "a", {"x": 1})
    assert resp.status_code == 503


async def test_pool_exhausted_is_503(client, token, settings):
    from streams.engine.context import redis_context

    settings.REDIS = replace(settings.REDIS, pool_min=0, pool_max=1, pool_acquire_timeout_ms=50)
    ctx = await redis_context()
    async with ctx.nodes.nodes()[0].main.client():  # listing reads every node's buckets
        resp = await client.get("/api/streams", **auth(token))
    assert resp.status_code == 503
    assert "exhausted" in resp.json()["detail"]


async def test_openapi_and_docs(client):
    resp = await client.get("/api/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    assert "/api/streams/{name}/events" in paths and "/api/batch/streams/delete" in paths
    assert (await client.get("/api/docs")).status_code == 200


async def test_staff_session_write_needs_csrf_token(r):
    def staff():
        make_user("staff", password="pw", staff=True)

    await sync_to_async(staff)()
    client = AsyncClient(enforce_csrf_checks=True)
    await client.alogin(username="staff", password="pw")
    resp = await client.post("/api/streams/a/events", '{"x": 1}', content_type="application/json")
    assert resp.status_code == 403 and "CSRF" in resp.json()["detail"]


async def test_unknown_api_path_and_wrong_method_answer_json(client):
    resp = await client.get("/api/nothing-here")
    assert resp.status_code == 404 and "no such endpoint" in resp.json()["detail"]
    resp = await client.patch("/api/streams/a")
    assert resp.status_code == 405 and "not allowed" in resp.json()["detail"]


async def test_what_django_rejects_before_a_view_is_json_under_api(client):
    resp = await client.get("/api/streams", headers={"host": "evil.example"})  # not in ALLOWED_HOSTS
    assert resp.status_code == 400 and "evil.example" in resp.json()["detail"]


@pytest.mark.django_db
def test_admin_creates_token_and_shows_it_once(admin_client):

    user = get_user_model().objects.get(username="admin")
    resp = admin_client.post("/admin/streams/apitoken/add/", {"user": user.pk, "name": "bike", "scopes": "read,publish", "is_active": "on"}, follow=True)
    assert resp.status_code == 200
    token = ApiToken.objects.get(name="bike")
    shown = [str(m) for m in resp.context["messages"]]
    raw = next(m.split(": ")[-1] for m in shown if "shown only once" in m)
    from streams.models import hash_token

    assert hash_token(raw) == token.key_hash and token.scopes == "read,publish"
