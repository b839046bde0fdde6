"""The Content-Security-Policy in a real browser (issue 20, item 9): every page is served with
the policy, the browser reports no violation on it, and the page still works — the coach's
live page and the group view show live tiles, Swagger UI lists the operations, the admin and
its monitoring dashboard render. Same server and chromium as tests/test_pages.py."""

from __future__ import annotations

import re

import pytest

from tests.test_pages import RIDERS, SimulatedRide, browser, logged_in_page, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(180)

# Every violation the page sees, from the page's own event (scripts, styles, connections, frames).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


class Watched:
    """A page that records CSP violations (its event and the console's "Content Security Policy" errors)."""

    def __init__(self, page) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", lambda msg: self.console.append(msg.text) if "Content Security Policy" in msg.text else None)

    def goto(self, url: str) -> dict[str, str]:
        response = self.page.goto(url)
        assert response is not None and response.ok, url
        policy = dict(d.strip().split(" ", 1) for d in response.headers.get("content-security-policy", "").split(";")
                      if d.strip())
        # Served with the policy: scripts from this origin, or inline with the response's nonce.
        assert re.fullmatch(r"'self'( 'nonce-[A-Za-z0-9+/=]+')?", policy.get("script-src", "")), (url, policy)
        assert policy.get("object-src") == "'none'" and policy.get("frame-ancestors") == "'none'", policy
        return policy

    def assert_no_violation(self) -> None:
        seen = self.page.evaluate("() => window.__cspViolations || []")
        assert seen == [] and self.console == [], (self.page.url, seen, self.console)


def test_live_pages_pass_the_policy_and_show_their_tiles(browser, server):  # noqa: F811
    watched = Watched(logged_in_page(browser, server))
    page = watched.page
    with SimulatedRide(server["base"], server["token"]):
        watched.goto(f"{server['base']}/live/{RIDERS[0]}")
        page.wait_for_selector("#state[data-state=live]", timeout=15000)  # the inline script ran
        page.wait_for_function("() => !isNaN(parseFloat(document.getElementById('np').textContent))", timeout=15000)
        page.wait_for_function("() => Number(document.getElementById('count').textContent) > 0")
        watched.assert_no_violation()

        watched.goto(f"{server['base']}/live/?streams={','.join(RIDERS)}")
        for name in RIDERS:
            row = f"tr[data-stream='{name}']"
            page.wait_for_selector(f"{row}.live", timeout=15000)
            page.wait_for_function(
                f"() => !isNaN(parseFloat(document.querySelector(\"{row} .np\").textContent))", timeout=15000
            )
        watched.assert_no_violation()
    page.close()


def test_swagger_ui_passes_the_policy_and_lists_the_operations(browser, server):  # noqa: F811
    watched = Watched(browser.new_page())
    watched.goto(f"{server['base']}/api/docs")
    page = watched.page
    page.wait_for_selector(".opblock-summary-path", timeout=15000)
    assert page.locator(".opblock-summary-path").count() > 10
    page.locator(".opblock-summary-path").first.click()  # expands: Swagger UI's own scripts and styles
    page.wait_for_selector(".opblock-body", timeout=15000)
    watched.assert_no_violation()
    page.close()


def test_the_admin_and_its_monitoring_dashboard_pass_the_policy(browser, server):  # noqa: F811
    watched = Watched(browser.new_page())
    page = watched.page
    watched.goto(f"{server['base']}/admin/login/?next=/admin/")
    watched.assert_no_violation()
    page.fill("#id_username", "coach")
    page.fill("#id_password", "browser-test-pw")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))
    watched.assert_no_violation()
    watched.goto(f"{server['base']}/admin/monitoring/")
    page.wait_for_selector("#main_pool tr", timeout=15000)  # the dashboard's inline script (nonce) ran
    assert page.text_content("#mon-status") != "loading…"
    watched.goto(f"{server['base']}/admin/streams/apitoken/add/")  # a form with the admin's widgets
    page.wait_for_selector("#id_user")
    watched.assert_no_violation()
    page.close()
