"""deploy/: the Prometheus alert rules pass ``promtool check rules`` and their unit tests, every
Grafana dashboard query is PromQL that promtool accepts, and every series the rules and the
dashboard query is one /metrics exports."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from streams.store import services as store

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "streamsite-dashboard.json"
SERIES = re.compile(r"\b((?:streamsite|django)_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def promtool() -> str:
    """CI sets PROMTOOL (scripts/get_promtool.sh): there these tests run or fail, never skip."""
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool not found under CI")
        pytest.skip("promtool not found: set PROMTOOL or run scripts/get_promtool.sh")
    return os.path.abspath(path) if os.sep in path else path


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run([tool, "test", "rules", "alerts.test.yml"], cwd=RULES.parent, capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_every_dashboard_query_is_promql_promtool_accepts(tmp_path):
    """Each panel's query as a recording rule: ``promtool check rules`` parses and type-checks
    it as Prometheus would (Grafana's own $variables, if any, in their usual values)."""
    tool = promtool()
    queries = [q.replace("$__rate_interval", "5m").replace("$__interval", "1m") for q in dashboard_queries()]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": query} for i, query in enumerate(queries)
    ]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    check = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0 and f"SUCCESS: {len(queries)} rules found" in check.stdout, check.stdout + check.stderr


def queried_series() -> set[str]:
    expressions = [*dashboard_queries(), RULES.read_text()]
    return {m for expr in expressions for m in SERIES.findall(expr)}


def family_name(series: str) -> str:
    for suffix in SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


@pytest.mark.django_db(transaction=True)
async def test_every_series_the_dashboard_and_alerts_query_is_exported(r, settings):
    settings.STREAMS_PUBLIC_READ = True
    await store.stream_publish(name="d", entries=[{"x": "1"}])
    c = AsyncClient()
    await c.get("/api/streams/d")
    body = (await c.get("/metrics")).content.decode()
    exported = {family.name for family in text_string_to_metric_families(body)}
    wanted = queried_series()
    assert len(wanted) >= 15
    missing = sorted(s for s in wanted if family_name(s) not in exported)
    assert not missing, missing


def test_dashboard_is_grafana_json_with_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "streamsite" and dashboard["panels"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["gridPos"]["w"] > 0 for p in dashboard["panels"])
