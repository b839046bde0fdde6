
import pytest
from django.conf import settings as dj_settings
from django.contrib.auth import get_user_model

from streams.store.keys import key_layout
from tests.helpers import key, make_user, publish_sync


@pytest.fixture
def sync_redis(sync_r):
    return sync_r


@pytest.fixture
def staff_client(client, db):
    user = make_user("ops", superuser=True)
    client.force_login(user)
    return client


def publish(names):
    for name in names:
        publish_sync(name, 2, field="power", start=200)


def test_dashboard_for_staff_redirect_for_others(client, staff_client, db):
    page = staff_client.get("/admin/monitoring/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '"/health/metrics"' in html and "setInterval" in html
    assert 'id="redis_nodes"' in html  # pools per Redis node (one row on a standalone Redis)
    assert "cdn" not in html.lower() and "https://" not in html  # only the admin's own static files
    client.logout()
    anon = client.get("/admin/monitoring/")
    assert anon.status_code == 302 and "/admin/login/" in anon["Location"]
    plain = get_user_model().objects.create_user("plain", password="pw")
    client.force_login(plain)
    assert client.get("/admin/monitoring/").status_code == 302


def test_admin_index_links_operations_pages(staff_client):
    html = staff_client.get("/admin/").content.decode()
    assert "/admin/monitoring/" in html and "/admin/redis-streams/" in html


def test_streams_page_lists_with_info_and_searches_by_prefix(staff_client, sync_redis):
    publish(["bike-1", "bike-2", "run-1"])
    page = staff_client.get("/admin/redis-streams/?q=bike")
    assert page.status_code == 200
    html = page.content.decode()
    assert "bike-1" in html and "bike-2" in html and "run-1" not in html
    assert "/live/bike-1" in html
    assert page.context["rows"][0]["info"].length == 2


def test_stream_detail_shows_latest_entries(staff_client, sync_redis):
    publish(["ride"])
    page = staff_client.get("/admin/redis-streams/ride/")
    assert page.status_code == 200
    assert [e.data["power"] for e in page.context["entries"]] == ["201", "200"]
    assert staff_client.get("/admin/redis-streams/nope/").status_code == 404


def test_bulk_delete_asks_then_deletes_through_the_service(staff_client, sync_redis):
    publish(["a", "b", "c"])
    confirm = staff_client.post("/admin/redis-streams/delete/", {"names": ["a", "b"]})
    assert confirm.status_code == 200 and b"Yes, delete" in confirm.content
    assert sync_redis.exists(key("a"), key("b")) == 2  # nothing deleted before confirming
    done = staff_client.post("/admin/redis-streams/delete/", {"names": ["a", "b"], "confirm": "yes"}, follow=True)
    assert done.status_code == 200
    assert sync_redis.exists(key("a"), key("b")) == 0 and sync_redis.exists(key("c")) == 1
    assert not sync_redis.sismember(key_layout(dj_settings.REDIS).registry(key_layout(dj_settings.REDIS).bucket("a")).names, "a")
    assert "Deleted 2 of 2" in done.content.decode()


def test_streams_pages_need_the_stream_permissions_not_just_staff(client, db, sync_redis):
    from django.contrib.auth.models import Permission

    user = make_user("desk", staff=True)
    client.force_login(user)
    assert client.get("/admin/redis-streams/").status_code == 403
    assert client.post("/admin/redis-streams/delete/", {"names": ["a"], "confirm": "yes"}).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_all_streams"))
    user = get_user_model().objects.get(pk=user.pk)  # permissions are cached per user object
    client.force_login(user)
    assert client.get("/admin/redis-streams/").status_code == 200
    assert client.post("/admin/redis-streams/delete/", {"names": ["a"], "confirm": "yes"}).status_code == 403
