"""The pages' errors without a browser (issue 22): a page whose view finds Redis unreachable —
the front page, /live/, the admin's Redis streams pages — is the styled 503 page with
``Retry-After`` (streamsite.middleware.RedisUnavailableMiddleware), not a 500; the API keeps
its JSON 503; bad addresses are the styled 400 and 404 pages. The browser tests stop a real
Redis (tests/test_pages_rides.py); here the stream services fail as they would then."""

import pytest
from django.test import AsyncClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitoring import admin_views
from streams.store import services as store
from tests.helpers import make_user


def unreachable(error):
    async def fail(*args, **kwargs):
        raise error("Error 111 connecting to 127.0.0.1:6399. Connection refused.")

    return fail


@pytest.fixture(params=[RedisConnectionError, RedisTimeoutError])
def redis_down(request, monkeypatch):
    for name in ("streams_list", "stream_meta", "stream_info_batch", "check_readable"):
        monkeypatch.setattr(store, name, unreachable(request.param))
    monkeypatch.setattr(admin_views.store, "streams_list", unreachable(request.param))
    return request.param


def assert_styled_503(response):
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    html = response.content.decode()
    assert 'data-status="503"' in html and "cannot reach its live data store" in html
    assert "6399" not in html  # Redis's address stays in the server's log


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/live/ride-1", "/live/?streams=ride-1,ride-2"])
async def test_a_page_that_cannot_reach_redis_is_the_styled_503(redis_down, path):
    assert_styled_503(await AsyncClient().get(path))


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/redis-streams/", "/admin/redis-streams/ride-1/"])
def test_the_admins_redis_streams_pages_are_the_styled_503_too(redis_down, client, path):
    client.force_login(make_user("ops", superuser=True))
    response = client.get(path)
    assert_styled_503(response)
    html = response.content.decode()
    assert "streamsite administration" in html and "admin/css/base.css" in html  # the admin's own frame


@pytest.mark.django_db
async def test_the_api_keeps_its_json_503(redis_down):
    response = await AsyncClient().get("/api/streams")
    assert response.status_code == 503 and response.json()["detail"].startswith("redis unavailable")


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "status"), [
    ("/live/bad%20name", 400), ("/live/?streams=", 400), ("/live/?streams=a,a", 400), ("/nothing/here", 404),
])
async def test_bad_addresses_are_the_styled_pages(r, path, status):
    response = await AsyncClient().get(path)
    assert response.status_code == status and f'data-status="{status}"' in response.content.decode()
