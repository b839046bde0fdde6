from dataclasses import replace

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from streams.store import services as store
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
    await store.stream_publish(name="m", entries=[{"x": "1"}])
    import gc

    thresholds = gc.get_threshold()
    gc.set_threshold(12345, 17, 3)  # values no process runs with: the snapshot must report them
    try:
        body = (await c.get("/health/metrics")).json()
    finally:
        gc.set_threshold(*thresholds)
    assert set(body) == {"timestamp", "blocking_pool", "main_pool", "redis_nodes", "cluster", "hub", "capacity",
                         "live_metrics", "registry", "publish_durability", "operations", "gc"}
    assert body["publish_durability"] == {"mode": "primary", "replica_timeout_ms": 1000, "pipelines": 1,
                                          "pipelines_unreplicated": 0, "publishes_unreplicated": 0}
    assert body["live_metrics"] == {"streams": 0, "viewers": 0}
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
    await store.stream_publish(name="m", entries=[{"x": "1"}])
    resp = await AsyncClient().get("/metrics")  # the test client comes from 127.0.0.1
    assert resp.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(resp.content.decode())}
    pool = families["streamsite_redis_pool_connections"]
    states = {(s.labels["pool"], s.labels["state"]) for s in pool.samples}
    assert ("main", "in_use") in states and ("blocking", "waiting") in states
    assert "streamsite_operation_seconds" in families
    assert "streamsite_events_published" in families
    assert "streamsite_hub_listeners" in families and "streamsite_registry_streams" in families


def responses(status: str, view: str, method: str) -> float:
    from prometheus_client import REGISTRY

    labels = {"status": status, "view": view, "method": method}
    return REGISTRY.get_sample_value("django_http_responses_total_by_status_view_method_total", labels) or 0.0


async def test_http_requests_are_counted_by_view_not_path(r, settings):
    settings.STREAMS_PUBLIC_READ = True
    cases = [("404", "api:get_stream", "GET"), ("404", "<unnamed view>", "GET"), ("405", "api:list_streams", "<invalid method>")]
    before = [responses(*case) for case in cases]
    c = AsyncClient()
    for name in ("one", "two"):  # two paths, one view
        assert (await c.get(f"/api/streams/{name}")).status_code == 404
    assert (await c.get("/no/such/page")).status_code == 404
    assert (await c.generic("BREW", "/api/streams")).status_code == 405
    assert [responses(*case) - b for case, b in zip(cases, before)] == [2, 1, 1]
    body = (await c.get("/metrics")).content.decode()
    assert 'django_http_requests_latency_seconds_by_view_method_bucket{le="0.01",method="GET",view="api:get_stream"}' in body


def django_prometheus_families() -> dict[str, tuple[str, ...]]:
    """What django-prometheus' own middleware exports: its metric objects, name → labels."""
    from django_prometheus.middleware import Metrics
    from prometheus_client.metrics import MetricWrapperBase

    return {
        metric._name: tuple(metric._labelnames)
        for metric in vars(Metrics.get_instance()).values()
        if isinstance(metric, MetricWrapperBase)
    }


@pytest.mark.django_db(transaction=True)
async def test_metrics_has_django_prometheus_standard_families_with_their_labels(r, settings):
    """The families (and label names) django-prometheus' middleware produces, from our
    async-native hooks on both handlers (API and admin), plus its database metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    settings.STREAMS_PUBLIC_READ = True
    c = AsyncClient()
    await c.get("/api/streams")  # the lean handler
    await c.get("/admin/login/")  # the standard handler, a template response
    await c.post("/api/streams/x/events", data="[]", content_type="application/json")  # 401
    body = (await c.get("/metrics")).content.decode()
    exported = {family.name: family for family in text_string_to_metric_families(body)}
    expected = django_prometheus_families()
    assert len(expected) >= 15
    for name, labels in expected.items():
        family = exported.get(name.removesuffix("_total"))  # the parser names counters without _total
        assert family is not None, f"{name} missing from /metrics"
        for sample in family.samples:
            if not sample.name.endswith(("_created",)):
                assert set(labels) <= set(sample.labels), (name, sample)
    for name in ("django_http_requests_total_by_view_transport_method", "django_http_responses_total_by_status_view_method",
                 "django_http_requests_latency_seconds_by_view_method", "django_http_responses_total_by_templatename"):
        assert exported[name].samples, name  # counted, not only declared
    assert any(s.labels.get("view") == "api:list_streams" for s in exported["django_http_requests_total_by_view_transport_method"].samples)
    assert "django_db_new_connections" in exported and exported["django_db_execute"].samples  # the database metrics


def test_no_sync_middleware_on_the_lean_paths(settings):
    """The API, health, metrics and live paths: only async-native middleware (no thread hop)."""
    from django.utils.module_loading import import_string

    for path in settings.LEAN_MIDDLEWARE:
        cls = import_string(path)
        assert cls.async_capable and not cls.sync_capable, path
    assert settings.LEAN_MIDDLEWARE[0].endswith("PrometheusBefore") and settings.LEAN_MIDDLEWARE[-1].endswith("PrometheusAfter")


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
    await store.stream_publish(name="m", entries=[{"x": "1"}])
    body = (await AsyncClient().get("/metrics")).content
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result
