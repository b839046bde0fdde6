"""The publish route at the ASGI edge (streamsite/server/direct.py) answers what Django's lean
handler answers: same statuses, same JSON, same headers, for good and bad input alike."""

import json

import pytest
from channels.testing import ApplicationCommunicator

from streams.store import services as store
from tests.helpers import actor, asgi_response, http_scope, read_response, user_with_token

pytestmark = pytest.mark.django_db(transaction=True)


async def lean_response(scope: dict, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """The same request through the lean handler alone: the route as it was before the edge."""
    from streamsite.asgi import lean_handler

    comm = ApplicationCommunicator(lean_handler, scope)
    await comm.send_input({"type": "http.request", "body": body})
    return await read_response(comm)


def publish_scope(name: str, token: str | None, body: bytes) -> dict:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return http_scope(f"/api/streams/{name}/events", method="POST", headers=headers)


async def both(name: str, token: str | None, body: bytes):
    """(edge answer, lean handler answer) of one publish; headers without Content-Length."""
    scope = publish_scope(name, token, body)
    edge = await asgi_response(scope, body)
    lean = await lean_response(scope, body)
    for _, headers, _ in (edge, lean):
        headers.pop("content-length", None)
    return edge, lean


def same_answer(edge, lean) -> None:
    assert edge[0] == lean[0], (edge, lean)
    assert edge[1] == lean[1]
    assert json.loads(edge[2]) == json.loads(lean[2])


@pytest.fixture
async def tokens(r):
    owner, token = await user_with_token("owner")
    _, readonly = await user_with_token("reader", scopes=["read"])
    return {"owner": token, "readonly": readonly, "owner_user": owner}


async def test_a_good_publish_is_answered_like_the_view(tokens, r):
    edge, lean = await both("ride", tokens["owner"], b'{"power": 250, "hr": 140}')
    assert edge[0] == lean[0] == 201
    assert edge[1] == lean[1]  # content type, security headers, X-Frame-Options
    ids = json.loads(edge[2])["ids"] + json.loads(lean[2])["ids"]
    assert [e[0] for e in await r.xrange(store_key("ride"))] == ids


def store_key(name: str) -> str:
    from tests.helpers import key

    return key(name)


@pytest.mark.parametrize("name,body,token,status", [
    ("ride", b"{not json", "owner", 400),
    ("-bad", b'{"power": 1}', "owner", 400),
    ("ride", b'{"_private": 1}', "owner", 400),
    ("ride", b'{"power": 1}', None, 401),
    ("ride", b'{"power": 1}', "nonsense", 401),
    ("ride", b'{"power": 1}', "readonly", 403),
])
async def test_bad_requests_get_the_views_answers(tokens, name, body, token, status):
    raw = tokens.get(token, token)
    edge, lean = await both(name, raw, body)
    assert edge[0] == status
    same_answer(edge, lean)
    assert "detail" in json.loads(edge[2])


async def test_a_body_over_the_limit_is_refused_at_the_edge_too(tokens, settings):
    settings.STREAMS_MAX_BODY = 64
    body = json.dumps({"power": "1" * 100}).encode()
    status, _, content = await asgi_response(publish_scope("ride", tokens["owner"], body), body)
    assert status == 413 and "STREAMS_MAX_BODY" in json.loads(content)["detail"]


async def test_the_rate_limit_answers_429_with_retry_after_like_the_view(tokens, settings):
    settings.PUBLISH_RATE_PER_TOKEN = 1  # a bucket of 10 entries
    body = json.dumps([{"i": str(i)} for i in range(11)]).encode()
    status, _, _ = await asgi_response(publish_scope("ride", tokens["owner"], body), body)
    assert status == 201  # a full bucket lets one batch past its size; then it is empty
    edge, lean = await both("ride", tokens["owner"], b'{"power": 1}')
    assert edge[0] == 429
    same_answer(edge, lean)
    assert edge[1]["retry-after"]


async def test_an_ended_ride_answers_409_like_the_view(tokens):
    await store.stream_publish(name="ride", entries=[{"power": "1"}], actor=actor(tokens["owner_user"]))
    await store.stream_end(name="ride", reason="owner", actor=actor(tokens["owner_user"]))
    edge, lean = await both("ride", tokens["owner"], b'{"power": 2}')
    assert edge[0] == 409
    same_answer(edge, lean)


async def test_someone_elses_stream_is_refused_like_the_view(tokens):
    _, other = await user_with_token("other")
    await store.stream_publish(name="ride", entries=[{"power": "1"}], actor=actor(tokens["owner_user"]))
    edge, lean = await both("ride", other, b'{"power": 2}')
    assert edge[0] in (403, 404)
    same_answer(edge, lean)


async def test_the_edge_counts_in_prometheus(tokens):
    from prometheus_client import REGISTRY

    def published() -> float:
        return REGISTRY.get_sample_value(
            "django_http_responses_total_by_status_view_method_total",
            {"status": "201", "view": "api:read_events", "method": "POST"},  # ninja names the path by its GET
        ) or 0.0

    before = published()
    body = b'{"power": 1}'
    status, _, _ = await asgi_response(publish_scope("ride", tokens["owner"], body), body)
    assert status == 201 and published() == before + 1, [
        s for m in REGISTRY.collect() if m.name == "django_http_responses_total_by_status_view_method" for s in m.samples]
