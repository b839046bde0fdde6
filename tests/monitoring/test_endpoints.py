from dataclasses import replace

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from streams import operations
from tests.helpers import http_scope, make_user

pytestmark = pytest.mark.django_db(transaction=True)


async def test_health_is_ok_without_dependencies(settings):
    settings.REDIS = replace(settings.REDIS, url="redis://127.0.0.1:1/0")
    resp = await AsyncClient().get("/health/")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


async def test_ready_reports_each_check(r):
    resp = await AsyncClient().get("/health/ready")
    assert resp.status_code == 200, resp.content
    checks = resp.json()["checks"]
    assert set(checks) == {"redis", "database", "pools"} and all(c["ok"] for c in checks.values())
    assert all(c["latency_ms"] >= 0 for c in checks.values())


async def test_ready_is_503_when_redis_is_unreachable(r, settings, caplog):
    settings.REDIS = replace(settings.REDIS, url="redis://127.0.0.1:1/0", pool_min=0, blocking_pool_min=0)
    resp = await AsyncClient().get("/health/ready")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert not body["checks"]["redis"]["ok"] and body["checks"]["redis"]["error"] == (
        "redis check failed (details in the server log)"
    )
    assert "127.0.0.1:1" not in resp.content.decode()  # no raw exception text to the prober
    assert any("readiness check redis failed" in m and "Error" in m for m in caplog.messages)
    assert body["checks"]["database"]["ok"]


async def test_metrics_json_auth_and_shape(r, settings):
    settings.MONITORING_TOKEN = "s3cret-token"
    c = AsyncClient()
    assert (await c.get("/health/metrics")).status_code == 401
    assert (await c.get("/health/metrics", headers={"Authorization": "Bearer nope"})).status_code == 403

    def users():
        get_user_model().objects.create_user("plain", password="pw")
        make_user("ops", password="pw", staff=True)

    await sync_to_async(users)()
    await c.alogin(username="plain", password="pw")
    assert (await c.get("/health/metrics")).status_code == 403
    await c.alogin(username="ops", password="pw")
    await operations.stream_publish(name="m", entries=[{"x": "1"}])
    import gc

    thresholds = gc.get_threshold()
    gc.set_threshold(12345, 17, 3)  # values no process runs with: the snapshot must report them
    try:
        body = (await c.get("/health/metrics")).json()
    finally:
        gc.set_threshold(*thresholds)
    assert set(body) == {"timestamp", "blocking_pool", "main_pool", "redis_nodes", "cluster", "hub", "capacity",
                         "registry", "operations", "gc"}
    assert body["redis_nodes"] and {"address", "main_pool", "blocking_pool"} <= set(body["redis_nodes"][0])
    assert sum(n["main_pool"]["total"] for n in body["redis_nodes"]) == body["main_pool"]["total"]
    assert body["gc"]["thresholds"] == [12345, 17, 3] and len(body["gc"]["collections"]) == 3
    assert set(body["main_pool"]) == {"total", "in_use", "available", "waiting"}
    assert body["registry"]["streams"] == 1 and body["registry"]["age_ms"] is not None
    publish = next(op for op in body["operations"] if op["name"] == "publish")
    assert set(publish) == {"name", "count", "total_ms", "min_ms", "max_ms", "avg_ms", "p95_ms"}
    token = await AsyncClient().get("/health/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert token.status_code == 200


async def test_prometheus_metrics_parse_and_include_pools(r, settings):
    await operations.stream_publish(name="m", entries=[{"x": "1"}])
    resp = await AsyncClient().get("/metrics")  # the test client comes from 127.0.0.1
    assert resp.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(resp.content.decode())}
    pool = families["streamsite_redis_pool_connections"]
    states = {(s.labels["pool"], s.labels["state"]) for s in pool.samples}
    assert ("main", "in_use") in states and ("blocking", "waiting") in states
    assert "streamsite_operation_seconds" in families
    assert "streamsite_events_published" in families
    assert "streamsite_hub_listeners" in families and "streamsite_registry_streams" in families


def request_count(method: str, route: str, status: str) -> float:
    from prometheus_client import REGISTRY

    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("streamsite_http_request_duration_seconds_count", labels) or 0.0


async def test_http_requests_are_counted_by_route_not_path(r, settings):
    settings.STREAMS_PUBLIC_READ = True
    before = (request_count("GET", "api/streams/<name>", "404"), request_count("GET", "<unmatched>", "404"),
              request_count("other", "api/streams", "405"))
    c = AsyncClient()
    for name in ("one", "two"):  # two paths, one route
        assert (await c.get(f"/api/streams/{name}")).status_code == 404
    assert (await c.get("/no/such/page")).status_code == 404
    assert (await c.generic("BREW", "/api/streams")).status_code == 405
    after = (request_count("GET", "api/streams/<name>", "404"), request_count("GET", "<unmatched>", "404"),
             request_count("other", "api/streams", "405"))
    assert [a - b for a, b in zip(after, before)] == [2, 1, 1]
    body = (await c.get("/metrics")).content.decode()
    assert 'streamsite_http_request_duration_seconds_bucket{le="0.001",method="GET",route="api/streams/<name>"' in body


async def get_from(address: str, path: str, headers=()) -> int:
    """Status of a GET sent from ``address`` through the real ASGI app."""
    from channels.testing import ApplicationCommunicator

    from streamsite.asgi import application

    comm = ApplicationCommunicator(application, http_scope(path, headers=headers, client=(address, 5000)))
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(5)
    await comm.wait(5)
    return start["status"]


async def test_prometheus_refuses_public_addresses_without_token(r, settings):
    settings.DEBUG = False
    settings.MONITORING_TOKEN = "tok"
    assert await get_from("203.0.113.9", "/metrics") == 403
    assert await get_from("203.0.113.9", "/metrics", [(b"authorization", b"Bearer tok")]) == 200
    assert await get_from("10.1.2.3", "/metrics") == 200
    settings.DEBUG = True
    assert await get_from("203.0.113.9", "/metrics") == 200


async def test_prometheus_output_passes_promtool_when_available(r):
    """CI sets PROMTOOL (scripts/get_promtool.sh), so there this test runs or fails, never skips."""
    import os
    import shutil
    import subprocess

    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: set PROMTOOL or run scripts/get_promtool.sh")
    await operations.stream_publish(name="m", entries=[{"x": "1"}])
    body = (await AsyncClient().get("/metrics")).content
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result
