"""WebSocket against the production server, in a real browser where a browser is the point:
another origin's page cannot use the visitor's session over a WebSocket (cross-site WebSocket
hijacking), this server's own page can; the token rides in ``Sec-WebSocket-Protocol`` and
never reaches the log; refused and unrouted handshakes answer 4xx JSON without a traceback.

The server, chromium and the login are tests/test_pages.py's (Debian's chromium through
Playwright's ``executable_path``; skipped when chromium is missing, a failure with CI=true).
The other origin is a second tiny HTTP server on another port of the same host: same-site for
the browser, so the session cookie (SameSite=Lax) goes along with the handshake — only the
Origin check stands between that page and the stream."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests import test_pages
from tests.test_pages import logged_in_page
from tests.test_shutdown import free_port

server, browser = test_pages.server, test_pages.browser  # its fixtures: the production server, chromium
STREAM = "ws-private-ride"

PROBE = """async (args) => await new Promise((resolve) => {
    const out = {opened: false, protocol: null, messages: [], code: null};
    const ws = args.protocols ? new WebSocket(args.url, args.protocols) : new WebSocket(args.url);
    ws.onopen = () => { out.opened = true; out.protocol = ws.protocol; ws.send(JSON.stringify(args.frame || {t: 99})); };
    // until the stream's first entry and the answer to the frame (ids or an error) are in
    const done = () => out.messages.some((m) => m.data && m.data.t === "0")
        && out.messages.some((m) => m.ids || m.error);
    ws.onmessage = (e) => { out.messages.push(JSON.parse(e.data)); if (done()) ws.close(); };
    ws.onclose = (e) => { out.code = e.code; resolve(out); };
})"""


@pytest.fixture(scope="module")
def private_stream(server):
    """A private stream of the admin's with one entry."""
    headers = {"Authorization": f"Bearer {server['token']}"}
    base = server["base"]
    assert httpx.put(f"{base}/api/streams/{STREAM}", json={"visibility": "private"}, headers=headers).status_code in (200, 201)
    response = httpx.post(f"{base}/api/streams/{STREAM}/events", json={"t": 0, "power": 321}, headers=headers)
    assert response.status_code == 201, response.text
    yield STREAM
    httpx.delete(f"{base}/api/streams/{STREAM}", headers=headers)


@pytest.fixture(scope="module")
def other_origin():
    """Another site's page: a second HTTP server on another port of 127.0.0.1."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>another site</title><p>nothing to see"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join(10)
        httpd.server_close()


def ws_url(server, path: str) -> str:
    return server["base"].replace("http://", "ws://") + path


def test_another_origins_page_cannot_use_the_session_over_a_websocket(browser, server, private_stream, other_origin):
    page = logged_in_page(browser, server)
    try:
        page.goto(other_origin)  # same browser, same cookies, another origin
        assert page.context.cookies(server["base"]), "the session cookie goes along with the handshake"
        hijack = page.evaluate(PROBE, {
            "url": ws_url(server, f"/ws/streams/{private_stream}/?from=start"), "frame": {"hijacked": 1},
        })
    finally:
        page.close()
    assert hijack == {"opened": False, "protocol": None, "messages": [], "code": 1006}, hijack
    entries = httpx.get(f"{server['base']}/api/streams/{private_stream}/events",
                        headers={"Authorization": f"Bearer {server['token']}"}).text
    assert "hijacked" not in entries
    assert f'"WebSocket /ws/streams/{private_stream}/?from=start" 403' in server["log"].read_text()


def test_this_servers_own_page_reads_with_the_session_but_publishes_only_with_the_csrf_token(
    browser, server, private_stream
):
    page = logged_in_page(browser, server)
    url = ws_url(server, f"/ws/streams/{private_stream}/?from=start")
    try:
        page.goto(f"{server['base']}/admin/")
        unproven = page.evaluate(PROBE, {"url": url, "frame": {"unproven": 1}})
        csrf = next(c["value"] for c in page.context.cookies(server["base"]) if c["name"] == "csrftoken")
        proven = page.evaluate(PROBE, {"url": f"{url}&csrf={csrf}", "frame": {"proven": 1}})
    finally:
        page.close()
    assert unproven["opened"], unproven
    assert {"t": "0", "power": "321"} in [m.get("data") for m in unproven["messages"]], unproven
    assert any("CSRF" in m.get("error", "") for m in unproven["messages"]), unproven
    assert proven["opened"] and any("ids" in m for m in proven["messages"]), proven
    entries = httpx.get(f"{server['base']}/api/streams/{private_stream}/events",
                        headers={"Authorization": f"Bearer {server['token']}"}).text
    assert "unproven" not in entries and "proven" in entries
    assert csrf not in server["log"].read_text()  # ?csrf= is redacted like ?token=


def test_a_page_sends_the_token_in_the_subprotocol_and_the_log_never_shows_a_token(browser, server, private_stream):
    page = browser.new_page()  # no session: the token is the only credential
    try:
        page.goto(f"{server['base']}/api/docs")
        got = page.evaluate(PROBE, {
            "url": ws_url(server, f"/ws/streams/{private_stream}/?from=start"),
            "protocols": ["streamsite.token", server["token"]],
        })
    finally:
        page.close()
    assert got["opened"] and got["protocol"] == "streamsite.token", got
    assert {"t": "0", "power": "321"} in [m.get("data") for m in got["messages"]], got

    # A device that still puts the token in the URL: served, and the log redacts it.
    with connect(ws_url(server, f"/ws/streams/{private_stream}/?token={server['token']}&from=start")) as ws:
        assert json.loads(ws.recv(timeout=10))["data"] == {"t": "0", "power": "321"}
    log = server["log"].read_text()
    assert f'"WebSocket /ws/streams/{private_stream}/?token=[redacted]&from=start" [accepted]' in log
    assert server["token"] not in log


@pytest.mark.parametrize("path,headers,status,detail", [
    ("/ws/nothing/", {}, 404, "no WebSocket endpoint at '/ws/nothing/'"),
    ("/ws/streams/x/", {"Origin": "null"}, 403, "'null'"),
    ("/ws/streams/x/", {"Origin": "https://evil.example"}, 403, "WEBSOCKET_ALLOWED_ORIGINS"),
])
def test_refused_handshakes_answer_json_without_a_traceback(server, path, headers, status, detail):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, path), additional_headers=headers, open_timeout=10)
    response = refused.value.response
    assert response.status_code == status
    assert detail in json.loads(response.body)["detail"]
    assert "Traceback" not in server["log"].read_text()


def test_a_frame_over_the_body_limit_gets_an_error_frame(server):
    with connect(ws_url(server, "/ws/streams/ws-frames/"),
                 additional_headers={"Authorization": f"Bearer {server['token']}"}, max_size=None) as ws:
        ws.send(json.dumps({"x": "a" * (1024 * 1024)}))
        reply = json.loads(ws.recv(timeout=10))
        assert "STREAMS_MAX_BODY" in reply["error"] and "1048576 bytes" in reply["error"]
        ws.send(json.dumps({"x": "small"}))
        replies = [json.loads(ws.recv(timeout=10)) for _ in range(2)]  # the ack and the entry (it follows)
        assert any("ids" in m for m in replies), replies
    httpx.delete(f"{server['base']}/api/streams/ws-frames", headers={"Authorization": f"Bearer {server['token']}"})
