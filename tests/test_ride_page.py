"""/ride/, the athlete's publisher, in a real browser (issue 25): a fake ``navigator.bluetooth``
serves GATT notifications built here per the Bluetooth SIG's specifications (Cycling Power,
Heart Rate, Cycling Speed and Cadence, Fitness Machine indoor bike data); the page decodes
them and publishes one entry a second over the stream's WebSocket. With the browser context
offline the samples wait in the page's outbox and arrive after the reconnect, in order, with
their own times, none twice; the archived ride's NP and TSS equal those of a control ride of
the samples the page took.

The page samples every 100 ms of page time here (``?sample_ms=100``), each sample still one
second of ride time ``t``: a minute offline takes 6 s. Same chromium and production server as
tests/test_pages.py.
"""

from __future__ import annotations

import json
import os
import struct
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.test_pages import browser, logged_in_page, production_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(240)

NOTIFY_MS = 100  # a sensor's notification every 100 ms of page time
FRAMES = 1500  # 150 s of notifications, then the sensor holds its last
WHEEL_M = 2.105  # the page's wheel circumference


# --- GATT notifications, byte by byte (little-endian) -------------------------------------------
def power_at(n: int) -> int:
    return 180 + 15 * (n % 11)  # varies, so NP is not the average


def cycling_power(n: int) -> bytes:
    """Cycling Power Measurement: flags 0x0020 (crank revolution data present), power (sint16),
    cumulative crank revolutions (uint16, from near its rollover) and the last crank event time
    (uint16, 1/1024 s): one revolution every 640/1024 s is 96 rpm."""
    return struct.pack("<HhHH", 0x0020, power_at(n), (65500 + n) & 0xFFFF, (n * 640) & 0xFFFF)


def heart_rate(n: int) -> bytes:
    """Heart Rate Measurement: flags 0x00 (an 8-bit value), 142 bpm."""
    return struct.pack("<BB", 0x00, 142)


def speed_cadence(n: int) -> bytes:
    """CSC Measurement: flags 0x03 (wheel and crank data): 3 wheel revolutions a second (uint32,
    time uint16 in 1/1024 s), one crank revolution a second (60 rpm: the power meter's wins)."""
    return struct.pack("<BIHHH", 0x03, 3 * n, (n * 1024) & 0xFFFF, n & 0xFFFF, (n * 1024) & 0xFFFF)


def indoor_bike(n: int) -> bytes:
    """FTMS Indoor Bike Data: flags 0x0044 (speed present as bit 0 is clear, cadence, power):
    36.00 km/h (0.01 km/h), 90 rpm (0.5 rpm), 300 W."""
    return struct.pack("<HHHh", 0x0044, 3600, 180, 300)


SENSORS = {0x1818: cycling_power, 0x180D: heart_rate, 0x1816: speed_cadence, 0x1826: indoor_bike}

FAKE_BLUETOOTH = """
(() => {
  const RECORDED = %(recorded)s, NOTIFY_MS = %(notify_ms)d;
  const NAMES = { 0x1818: "PWR 4521", 0x180d: "HRM 7A10", 0x1826: "TRAINER 0C33", 0x1816: "SPD-CAD 118E" };
  class Measurement extends EventTarget {
    constructor(frames) { super(); this.frames = frames; this.value = null; }
    async startNotifications() {
      let n = 0;
      const timer = setInterval(() => {
        if (n >= this.frames.length) return clearInterval(timer);
        this.value = new DataView(new Uint8Array(this.frames[n++]).buffer);
        this.dispatchEvent(new Event("characteristicvaluechanged"));
      }, NOTIFY_MS);
      return this;
    }
  }
  const devices = {};
  const device = (service) => {
    const found = Object.assign(new EventTarget(), { name: NAMES[service], gatt: { connect: async () => ({
      getPrimaryService: async (s) => ({ getCharacteristic: async () => new Measurement(RECORDED[s]) }),
    }) } });
    return devices[service] = found;
  };
  window.dropSensor = (service) => devices[service].dispatchEvent(new Event("gattserverdisconnected"));
  Object.defineProperty(navigator, "bluetooth", { configurable: true, value: {
    requestDevice: async ({ filters }) => device(filters[0].services[0]),
  } });
})();
"""


def fake_bluetooth() -> str:
    recorded = {service: [list(build(n)) for n in range(FRAMES)] for service, build in SENSORS.items()}
    return FAKE_BLUETOOTH % {"recorded": json.dumps(recorded), "notify_ms": NOTIFY_MS}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with production_server(tmp_path_factory.mktemp("ride"), RIDE_JANITOR="false", RIDE_PAGE_FAST_CLOCK="true") as running:
        yield running


@pytest.fixture
def api(site):
    with httpx.Client(base_url=site["base"], headers={"Authorization": f"Bearer {site['token']}"}, timeout=10) as client:
        yield client


def stream_entries(api, name: str) -> list[dict]:
    """Every entry of the stream, oldest first: [{"id", "data"}]."""
    entries, start = [], "-"
    while True:
        page = api.get(f"/api/streams/{name}/events", params={"start": start, "count": 1000}).json()["events"]
        entries += page
        if len(page) < 1000:
            return entries
        start = "(" + page[-1]["id"]


def samples(entries: list[dict]) -> list[dict]:
    return [e["data"] for e in entries if "t" in e["data"]]


def wait_for(condition, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def count(page, element_id: str) -> int:
    return int(page.text_content(f"#{element_id}").split()[0])


def connect_sensors(page, *sensors: str) -> None:
    for sensor in sensors:
        page.click(f"[data-sensor={sensor}] button")
        page.wait_for_selector(f"[data-sensor={sensor}][data-state=connected]")


def sent_frames(page) -> list[dict]:
    """Every entry the page's WebSockets send, in order, as the page sent them."""
    frames: list[dict] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.extend(json.loads(payload))))
    return frames


def archive(api, name: str) -> dict:
    response = api.post(f"/api/streams/{name}/archive", json={"force": True})
    assert response.status_code == 201, response.text
    return response.json()


def test_publishes_decoded_sensors_and_backfills_after_offline(browser, site, api):  # noqa: F811
    name = f"ride-{uuid.uuid4().hex[:8]}"
    page = logged_in_page(browser, site)
    page.context.add_init_script(fake_bluetooth())
    frames = sent_frames(page)
    page.goto(f"{site['base']}/ride/?sample_ms=100")
    assert page.is_hidden("#no-bluetooth")
    page.fill("#stream-name", name)
    connect_sensors(page, "power", "heart", "csc")
    page.click("#start")
    page.wait_for_selector("#state[data-state=live]")
    assert api.get(f"/api/streams/{name}").json()["visibility"] == "private"  # created by the page
    assert api.put(f"/api/streams/{name}", json={"ftp": 250}).status_code == 200
    wait_for(lambda: count(page, "sent") >= 20, what="20 entries sent")

    # The decoded values, as stored: power, cadence from crank revolutions (96 rpm across the
    # counters' rollover), heart rate, speed from wheel revolutions.
    last = samples(stream_entries(api, name))[-1]
    assert 180 <= float(last["power"]) <= 330
    assert float(last["cadence"]) == 96.0
    assert float(last["heart_rate"]) == 142
    assert float(last["speed"]) == pytest.approx(3 * WHEEL_M, abs=0.001)
    assert float(last["t"]) == pytest.approx(time.time(), abs=120)  # Unix seconds (10x ride clock here)
    assert json.loads(page.text_content("#last-entry"))["heart_rate"] == 142

    # Offline: a minute of samples waits in the outbox, shown; nothing reaches the stream.
    page.context.set_offline(True)
    page.wait_for_selector("#state[data-state=offline]")
    stored_before = len(stream_entries(api, name))
    wait_for(lambda: count(page, "queued") >= 60, what="a minute of queued samples")
    assert len(stream_entries(api, name)) == stored_before
    page.context.set_offline(False)
    page.wait_for_selector("#state[data-state=live]", timeout=15000)
    wait_for(lambda: count(page, "queued") == 0, what="the outbox sent")
    wait_for(lambda: count(page, "sent") >= stored_before + 70, what="more entries after the back-fill")
    page.click("#end")
    page.wait_for_selector("#state[data-state=ended]")

    entries = stream_entries(api, name)
    ride = samples(entries)
    times = [float(s["t"]) for s in ride]
    assert times == sorted(times) and len(set(times)) == len(times)  # in order, none twice
    assert max(b - a for a, b in zip(times, times[1:])) < 3  # no hole where the page was offline
    backfill = entries[stored_before:stored_before + 60]  # taken offline, stored at the reconnect
    backfill_times = [float(e["data"]["t"]) for e in backfill]
    stored_ms = [int(e["id"].split("-")[0]) for e in backfill]
    assert backfill_times[-1] - backfill_times[0] >= 50  # their own times, a minute apart...
    assert max(stored_ms) - min(stored_ms) < 2000  # ...though stored within a moment
    assert entries[-1]["data"] == {"_end": "owner"}

    # What the page took is what the stream holds: the entries it sent, each once by its t.
    taken = {entry["t"]: entry for entry in frames}
    assert [float(t) for t in sorted(taken)] == times
    assert [taken[t]["power"] for t in sorted(taken)] == [int(s["power"]) for s in ride]

    # The ride's archive equals an uninterrupted control ride of the same samples.
    control = f"control-{name}"
    assert api.put(f"/api/streams/{control}", json={"ftp": 250}).status_code == 201
    ordered = [taken[t] for t in sorted(taken)]
    for at in range(0, len(ordered), 1000):
        assert api.post(f"/api/streams/{control}/events", json=ordered[at:at + 1000]).status_code == 201
    workout, reference = archive(api, name), archive(api, control)
    assert workout["normalized_power"] == reference["normalized_power"]
    assert workout["tss"] == reference["tss"]
    assert workout["duration_s"] == reference["duration_s"] >= 80


def test_token_in_the_browser_and_a_smart_trainer(browser, site, api):  # noqa: F811
    name = f"trainer-{uuid.uuid4().hex[:8]}"
    context = browser.new_context()
    context.add_init_script(fake_bluetooth())
    page = context.new_page()
    page.goto(f"{site['base']}/ride/?sample_ms=100")
    assert page.is_visible("a.login") and page.is_visible("#token")  # anonymous: sign in, or a token
    page.fill("#token", "not-a-token")
    page.click("#token-form button")
    page.wait_for_selector("#message:has-text('not valid')")
    page.fill("#token", site["token"])
    page.click("#token-form button")
    page.wait_for_selector("#token-saved:visible")
    page.reload()
    assert page.is_visible("#token-saved") and page.is_hidden("#token")  # kept in this browser
    page.fill("#stream-name", name)
    connect_sensors(page, "trainer")
    page.click("#start")
    page.wait_for_selector("#state[data-state=live]")
    wait_for(lambda: count(page, "sent") >= 5, what="5 entries sent")
    last = samples(stream_entries(api, name))[-1]
    assert (float(last["power"]), float(last["cadence"]), float(last["speed"])) == (300, 90, 10)
    assert "heart_rate" not in last
    context.close()


def test_bad_stream_name_is_a_message_on_the_page(browser, site):  # noqa: F811
    page = logged_in_page(browser, site)
    response = page.goto(f"{site['base']}/ride/")
    assert "connect-src 'self'" in response.headers["content-security-policy"]  # its WebSocket too
    page.fill("#stream-name", "no spaces allowed")
    page.click("#start")
    page.wait_for_selector("#message:visible")
    assert "Cannot ride on" in page.text_content("#message")
    assert page.get_attribute("#state", "data-state") == "idle"


def test_gatt_decoders(browser, site):  # noqa: F811
    """The decoders' other branches: a 16-bit heart rate, a power measurement with the fields
    before crank data (pedal balance, accumulated torque, wheel data), FTMS "more data"."""
    page = browser.new_page()
    page.goto(f"{site['base']}/ride/")
    decode = "([fn, bytes]) => Gatt[fn](new DataView(new Uint8Array(bytes).buffer))"
    assert page.evaluate(decode, ["heartRate", list(struct.pack("<BH", 0x01, 300))]) == {"heart_rate": 300}
    power = struct.pack("<HhBHIHHH", 0x0035, 410, 50, 1234, 100, 2048, 7, 1024)
    assert page.evaluate(decode, ["cyclingPower", list(power)]) == {
        "power": 410, "wheel": {"revs": 100, "time": 2048, "bits": 32, "unit": 2048},
        "crank": {"revs": 7, "time": 1024, "bits": 16, "unit": 1024},
    }
    assert page.evaluate(decode, ["indoorBikeData", list(struct.pack("<HhB", 0x0241, 250, 150))]) == {
        "power": 250, "heart_rate": 150,
    }
    rate = "([a, b]) => Gatt.revolutionRate(a, b)"
    wheel = {"bits": 32, "unit": 1024}
    assert page.evaluate(rate, [{**wheel, "revs": 2**32 - 1, "time": 65000}, {**wheel, "revs": 2, "time": 1000}]) == pytest.approx(3 / (1536 / 1024))
    assert page.evaluate(rate, [{**wheel, "revs": 5, "time": 9}, {**wheel, "revs": 5, "time": 9}]) is None
    page.close()


class LosesAnAck:
    """Routes the page's WebSocket through the test: the server's 5th acknowledgement never
    reaches the page, and the connection drops right then (the entries were stored, the page
    does not know)."""

    def __init__(self, page) -> None:
        self.acks = 0
        self.lost: list[str] = []
        page.route_web_socket("**/ws/streams/**", self.route)

    def route(self, ws) -> None:
        server = ws.connect_to_server()
        ws.on_message(server.send)
        server.on_message(lambda message: self.to_page(ws, server, message))

    def to_page(self, ws, server, message: str) -> None:
        if '"ids"' in message:
            self.acks += 1
            if self.acks == 5:
                self.lost += json.loads(message)["ids"]
                ws.close()
                server.close()
                return
        ws.send(message)


def test_an_ack_lost_with_the_connection_sends_nothing_twice(browser, site, api):  # noqa: F811
    name = f"ack-{uuid.uuid4().hex[:8]}"
    page = logged_in_page(browser, site)
    page.context.add_init_script(fake_bluetooth())
    router = LosesAnAck(page)
    page.goto(f"{site['base']}/ride/?sample_ms=100")
    page.fill("#stream-name", name)
    connect_sensors(page, "heart")
    page.click("#start")
    wait_for(lambda: count(page, "sent") >= 20 and router.acks > 5, what="acks after the reconnect")  # count() lets the route run
    times = [float(s["t"]) for s in samples(stream_entries(api, name))]
    assert router.lost and times == sorted(set(times))  # stored once, not sent again
    assert max(b - a for a, b in zip(times, times[1:])) < 3

    # A sensor that drops out is connected again.
    page.evaluate("dropSensor(0x180d)")
    page.wait_for_selector("[data-sensor=heart][data-state=lost]:has-text('reconnecting')")
    page.wait_for_selector("[data-sensor=heart][data-state=connected]", timeout=10000)


def riding_then_offline(browser, site, prefix: str, *, queued: int = 10, frames: bool = False):  # noqa: F811
    """A logged-in rider on /ride/ (10 samples a second) with a power meter: 5 entries sent, then
    the browser offline with ``queued`` samples waiting. Returns (page, name, frames sent)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    page = logged_in_page(browser, site)
    page.context.add_init_script(fake_bluetooth())
    sent = sent_frames(page) if frames else None
    page.goto(f"{site['base']}/ride/?sample_ms=100")
    page.fill("#stream-name", name)
    connect_sensors(page, "power")
    page.click("#start")
    wait_for(lambda: count(page, "sent") >= 5, what="5 entries sent")
    page.context.set_offline(True)
    page.wait_for_selector("#state[data-state=offline]")
    wait_for(lambda: count(page, "queued") >= queued, what="queued samples")
    return page, name, sent


def test_ending_while_offline_ends_once_the_outbox_is_stored(browser, site, api):  # noqa: F811
    page, name, _ = riding_then_offline(browser, site, "end")

    # The click stops the sampling; the end waits for what was taken.
    page.click("#end")
    page.wait_for_selector("#end:has-text('end now, without them')", timeout=10000)
    assert "wait for the connection: the ride ends once they are stored" in page.text_content("#message")
    taken = count(page, "sent") + count(page, "queued")
    assert stream_entries(api, name)[-1]["data"] != {"_end": "owner"}  # not ended yet

    page.context.set_offline(False)  # back: the outbox goes, then the end, with no click
    page.wait_for_selector("#state[data-state=ended]", timeout=20000)
    entries = stream_entries(api, name)
    assert entries[-1]["data"] == {"_end": "owner"}
    assert len(samples(entries)) == taken  # every sample taken before the click, none after
    assert page.text_content("#end") == "end ride" and page.is_disabled("#end")


def test_an_end_that_waited_over_a_reload_goes_on_in_the_next_visit(browser, site, api):  # noqa: F811
    page, name, _ = riding_then_offline(browser, site, "endre")
    page.click("#end")
    page.wait_for_selector("#end:has-text('end now, without them')", timeout=10000)
    taken = count(page, "sent") + count(page, "queued")
    page.goto("about:blank")  # the rider left the page while the end waited

    page.context.set_offline(False)
    again = page
    again.goto(f"{site['base']}/ride/?sample_ms=100")  # no click: the outbox goes, then the end
    again.wait_for_selector("#state[data-state=ended]", timeout=20000)
    assert again.text_content("#message") == "Ride ended: it becomes a workout."
    entries = stream_entries(api, name)
    assert entries[-1]["data"] == {"_end": "owner"}
    times = [float(s["t"]) for s in samples(entries)]
    assert len(times) == taken and times == sorted(set(times))  # every sample once, in order
    assert again.input_value("#stream-name") != name  # a fresh name for the next ride
    again.reload()
    again.wait_for_selector("#state[data-state=idle]")  # ended: nothing resumes a second time
    assert again.is_enabled("#start")


def test_a_ride_ended_by_the_server_while_offline_says_what_could_not_be_stored(browser, site, api):  # noqa: F811
    """The server ended the ride while the page was offline (the janitor after RIDE_IDLE_END,
    or the owner elsewhere): back online, the refusal ends the ride on the page and says how
    many samples that waited are lost, instead of dropping them silently."""
    page, name, _ = riding_then_offline(browser, site, "gone")
    assert api.post(f"/api/streams/{name}/end").status_code == 200
    page.context.set_offline(False)
    page.wait_for_selector("#state[data-state=ended]", timeout=20000)
    message = page.text_content("#message")
    assert "is in state ended" in message and "samples not stored yet could not be stored" in message
    assert int(message.split(" — ")[1].split()[0]) >= 10
    assert count(page, "queued") == 0


def test_end_now_while_offline_drops_what_waits_and_ends_when_the_server_is_back(browser, site, api):  # noqa: F811
    page, name, frames = riding_then_offline(browser, site, "endnow", queued=5, frames=True)
    page.click("#end")
    page.click("#end:has-text('end now, without them')", timeout=10000)
    page.wait_for_selector("#message:has-text('ends once the server is reached')")
    assert count(page, "queued") == 0 and page.text_content("#end") == "end ride"
    sent, frames_before = count(page, "sent"), len(frames)
    assert page.get_attribute("#state", "data-state") == "offline"  # not ended: the server has not heard

    page.context.set_offline(False)  # back: the end goes out by itself, and no sample is taken again
    page.wait_for_selector("#state[data-state=ended]", timeout=20000)
    entries = stream_entries(api, name)
    assert entries[-1]["data"] == {"_end": "owner"} and len(frames) == frames_before  # nothing sent after
    # Stored: what was acknowledged, and a frame that was on its way when the network went (its
    # acknowledgement lost with it) — only what the page sent before going offline.
    stored = [float(s["t"]) for s in samples(entries)]
    assert len(stored) >= sent and set(stored) <= {float(f["t"]) for f in frames}


OTHER_RIDER = """
from django.contrib.auth.models import User
User.objects.get_or_create(username="other")
"""


def test_a_stream_of_someone_else_is_refused_for_good_and_sampling_stops(browser, site, api):  # noqa: F811
    """A rider (a plain user, with a token pasted in the page) on the coach's public stream: it
    may read it, so the ride starts and connects, but the server refuses the first publish for
    good (an error frame marked ``final``): the ride stops on the page, which says why, takes
    no more samples and sends nothing again."""
    site["manage"]("shell", "-c", OTHER_RIDER)
    other = site["manage"]("create_api_token", "other").strip()
    name = f"theirs-{uuid.uuid4().hex[:8]}"
    assert api.put(f"/api/streams/{name}", json={"visibility": "public"}).status_code in (200, 201)
    context = browser.new_context()
    context.add_init_script(fake_bluetooth())
    page = context.new_page()
    frames = sent_frames(page)
    page.goto(f"{site['base']}/ride/?sample_ms=100")
    page.fill("#token", other)
    page.click("#token-form button")
    page.wait_for_selector("#token-saved:visible")
    page.fill("#stream-name", name)
    connect_sensors(page, "power")
    page.click("#start")
    page.wait_for_selector("#state[data-state=refused]", timeout=15000)
    message = page.text_content("#message")
    assert message.startswith(f"Refused by the server: only the owner of stream '{name}'")
    assert "The ride stopped on this page" in message
    assert page.is_enabled("#start") and page.is_disabled("#end")
    taken, sent = page.text_content("#queued"), len(frames)
    assert str(count(page, "queued")) in message  # the message counts what waits
    # Absence can only be waited for: past the 5 s an error frame that is not final pauses a
    # publish before it goes again, and 60 sample periods: nothing is taken or sent any more.
    page.wait_for_timeout(6000)
    assert (page.text_content("#queued"), len(frames)) == (taken, sent)
    assert 1 <= sent <= 2 and stream_entries(api, name) == []  # the frame refused (and one in flight)
    context.close()


@pytest.fixture(scope="module")
def small_frames_site(tmp_path_factory):
    """A server whose publish limit (STREAMS_MAX_BODY) is 2,000 bytes: ~25 of the page's entries."""
    with production_server(tmp_path_factory.mktemp("ride-small"), RIDE_JANITOR="false", RIDE_PAGE_FAST_CLOCK="true",
                           STREAMS_MAX_BODY="2000") as running:
        yield running


def test_a_back_fill_goes_in_frames_under_the_servers_body_limit(browser, small_frames_site):  # noqa: F811
    """After a dropout the outbox goes out in frames that fit STREAMS_MAX_BODY (the page halves
    a frame until it does): every sample stored once, in order, no frame refused."""
    site = small_frames_site
    page, name, frames_sent = riding_then_offline(browser, site, "small", queued=60)
    sizes = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sizes.append(len(payload.encode()))))
    page.context.set_offline(False)
    wait_for(lambda: count(page, "queued") == 0 and count(page, "sent") >= 65, what="the outbox sent", timeout=30)
    with httpx.Client(base_url=site["base"], headers={"Authorization": f"Bearer {site['token']}"}, timeout=10) as api:
        times = [float(s["t"]) for s in samples(stream_entries(api, name))]
    assert len(times) >= 65 and times == sorted(set(times))
    assert sizes and max(sizes) <= 2000 and "STREAMS_MAX_BODY" not in (page.text_content("#message") or "")
    page.close()


SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", SIZES)
def test_layout_and_screenshots(browser, site, size, tmp_path):  # noqa: F811
    """/ride/ while riding with three sensors, at desktop and phone widths: nothing wider than
    the screen, no error. ``RIDE_SCREENSHOTS=docs/screenshots`` writes the screenshots README.md
    shows (ride-{size}.png)."""
    page = logged_in_page(browser, site, viewport=SIZES[size])
    page.context.add_init_script(fake_bluetooth())
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text else None)
    page.goto(f"{site['base']}/ride/?sample_ms=100")
    page.fill("#stream-name", f"morning-{uuid.uuid4().hex[:4]}")
    connect_sensors(page, "power", "heart", "csc")
    page.click("#start")
    page.wait_for_selector("#state[data-state=live]")
    wait_for(lambda: count(page, "sent") >= 95, what="95 entries sent")
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
    assert errors == []  # a new stream's GET is the one 404 (the page then creates it)
    page.screenshot(path=str(Path(os.environ.get("RIDE_SCREENSHOTS") or tmp_path) / f"ride-{size}.png"), full_page=True)


@pytest.mark.parametrize(("fast_clock", "asked", "sampled"), [
    (False, "100", 1000), (False, "", 1000), (True, "100", 100), (True, "5", 50), (True, "x", 1000),
])
def test_the_fast_clock_is_only_for_servers_that_turn_it_on(settings, fast_clock, asked, sampled):
    """``?sample_ms=`` runs the page's ride time fast (tests, demos): only where
    RIDE_PAGE_FAST_CLOCK is on; elsewhere the page samples once a second. (The page's config
    is this function's; the browser tests above ride with it on.)"""
    from django.test import RequestFactory

    from workouts.rides.views import sample_interval_ms

    settings.RIDE_PAGE_FAST_CLOCK = fast_clock
    assert sample_interval_ms(RequestFactory().get("/ride/", {"sample_ms": asked})) == sampled
