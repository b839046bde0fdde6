"""The pages in a real browser against the production server: the coach's live page and the
group view render live values from a simulated ride, /api/docs renders Swagger UI from this
server's own files, the admin's monitoring dashboard renders; static files are compressed and
cached (servestatic over collectstatic's output).

Debian's ``chromium`` driven by Playwright for Python (``executable_path``; Playwright's own
browser download is never used). ``.ci/run`` installs chromium; elsewhere the browser tests
skip when it is missing (CI=true makes that a failure).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.test_shutdown import ROOT, free_port, manage, production_command

ADMIN_PASSWORD = "browser-test-pw"
RIDERS = ("browser-r1", "browser-r2")


@contextlib.contextmanager
def production_server(tmp: Path, **extra_env: str):
    """The production server (DEBUG off) with its own SQLite file, collected static files, an
    admin ``coach`` with a token; the tests' Redis database unless ``REDIS_URL`` is given.
    Yields ``{"base", "token", "log", "manage"}`` (``manage(*args)``: a command on its database)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "streamsite.settings", "DEBUG": "false", "SECRET_KEY": "test",
        "ALLOWED_HOSTS": "127.0.0.1", "STREAMS_PUBLIC_READ": "false", "REDIS_URL": settings.REDIS.url,
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}", "STATIC_ROOT": str(tmp / "static"),
        "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD, "TMPDIR": str(tmp), **extra_env,
    })
    manage(env, "migrate", "--no-input", "-v0")
    manage(env, "collectstatic", "--no-input", "-v0")
    manage(env, "createsuperuser", "--no-input", "--username", "coach", "--email", "coach@example.com")
    token = manage(env, "create_api_token", "coach").strip()
    port = free_port()
    log = open(tmp / "server.log", "w+")
    proc = subprocess.Popen(production_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp / "server.log").read_text()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield {"base": base, "token": token, "log": tmp / "server.log", "manage": lambda *args: manage(env, *args)}
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The production server on the tests' Redis database."""
    with production_server(tmp_path_factory.mktemp("pages")) as running:
        try:
            yield running
        finally:
            for name in RIDERS:  # through the service: the registry forgets them too
                with contextlib.suppress(httpx.TransportError):
                    httpx.delete(f"{running['base']}/api/streams/{name}",
                                 headers={"Authorization": f"Bearer {running['token']}"}, timeout=5)


def test_static_files_are_compressed_and_cached(server):
    html = httpx.get(f"{server['base']}/api/docs").text
    assert "cdn" not in html.lower() and "https://" not in html  # Swagger UI from this server
    css = re.search(r'href="(/static/ninja/swagger-ui\.[0-9a-f]+\.css)"', html)
    assert css, html  # a hashed name (collectstatic's manifest)
    response = httpx.get(server["base"] + css.group(1), headers={"Accept-Encoding": "br, gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] in ("br", "gzip")
    assert "immutable" in response.headers["cache-control"] and "max-age=315360000" in response.headers["cache-control"]
    missing = httpx.get(f"{server['base']}/static/nothing-here.css")
    assert missing.status_code == 404


# --- the browser -------------------------------------------------------------------------------
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed: apt-get install chromium")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class SimulatedRide:
    """Publishes a ride to each rider's stream through the API, one second of ride time every
    50 ms, from a thread, until stopped."""

    def __init__(self, base: str, token: str) -> None:
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        self.stop = threading.Event()
        self.t = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        for name in RIDERS:
            response = self.client.put(f"/api/streams/{name}", json={"ftp": 250})
            assert response.status_code in (200, 201), response.text
        self._publish(60)  # a minute of history, so NP has full windows at once
        self.thread.start()
        return self

    def _publish(self, seconds: int) -> None:
        for i, name in enumerate(RIDERS):
            entries = [
                {"t": self.t + k, "power": 200 + 40 * i + (k % 5) * 10, "heart_rate": 140 + i, "cadence": 90}
                for k in range(seconds)
            ]
            response = self.client.post(f"/api/streams/{name}/events", content=json.dumps(entries),
                                        headers={"Content-Type": "application/json"})
            assert response.status_code == 201, response.text
        self.t += seconds

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self._publish(1)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.client.close()


def logged_in_page(browser, server, viewport=None):
    """A new page (at ``viewport``, else the default size) logged in as the admin ``coach``."""
    page = browser.new_page(viewport=viewport) if viewport else browser.new_page()
    page.goto(f"{server['base']}/admin/login/?next=/admin/")
    page.fill("#id_username", "coach")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))
    return page


def number(text: str) -> float:
    return float(text.rstrip("*"))


def test_live_page_and_group_view_show_live_values(browser, server):
    page = logged_in_page(browser, server)
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    with SimulatedRide(server["base"], server["token"]):
        page.goto(f"{server['base']}/live/{RIDERS[0]}")
        page.wait_for_selector("#state[data-state=live]", timeout=15000)
        page.wait_for_function("() => !isNaN(parseFloat(document.getElementById('np').textContent))", timeout=15000)
        assert 180 <= number(page.text_content("#np")) <= 260
        assert 180 <= number(page.text_content("#power3s")) <= 260
        assert page.text_content("#ftp") == "250"
        assert re.fullmatch(r"0:0\d:\d\d", page.text_content("#elapsed"))
        assert number(page.text_content("#hr")) == 140
        page.wait_for_function("() => Number(document.getElementById('count').textContent) > 60")  # points a second
        live_connections = [u for u in requested if u.endswith("/sse")]
        assert live_connections == [f"{server['base']}/api/streams/{RIDERS[0]}/metrics/sse"]  # one, for everything
        assert not [u for u in requested if "/events" in u]  # the chart came with the metrics
        # The power line spans the ride time recorded (over a minute of the chart's 5), although
        # its first minute was uploaded at once: count the plot's columns in the line's colour.
        columns = page.evaluate("""() => {
            const c = document.getElementById('chart');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const xs = new Set();
            for (let i = 0; i < d.length; i += 4) {
                if (d[i] > 200 && d[i + 1] > 130 && d[i + 1] < 210 && d[i + 2] < 80) xs.add((i / 4) % c.width);
            }
            return { line: xs.size, width: c.width };
        }""")
        assert columns["line"] > columns["width"] * 0.15, columns

        page.goto(f"{server['base']}/live/?streams={','.join(RIDERS)}")
        for name in RIDERS:
            row = f"tr[data-stream='{name}']"
            page.wait_for_selector(f"{row}.live", timeout=15000)
            page.wait_for_function(
                f"() => !isNaN(parseFloat(document.querySelector(\"{row} .np\").textContent))", timeout=15000
            )
        assert page.text_content(f"tr[data-stream='{RIDERS[1]}'] .hr") == "141"
    page.close()


def test_api_docs_and_admin_dashboard_render(browser, server):
    page = browser.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{server['base']}/api/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
    assert "streamsite" in page.text_content(".swagger-ui .info .title").lower()
    page.wait_for_selector(".opblock-summary-path")  # the operations are listed
    assert all(url.startswith(server["base"]) for url in requested), requested  # nothing from elsewhere
    page.close()

    page = logged_in_page(browser, server)
    page.goto(f"{server['base']}/admin/monitoring/")
    page.wait_for_selector("#main_pool tr", timeout=15000)  # filled from /health/metrics by the page
    assert page.text_content("#mon-status") != "loading…"
    page.close()
