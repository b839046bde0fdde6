"""Regenerate the coach's pages' screenshots in docs/screenshots/ (README.md shows them).

Against a running server (``./dev.sh serve`` prints its demo admin and token)::

    .venv/bin/python scripts/screenshots.py --base http://127.0.0.1:8000 \\
        --token "$TOKEN" --username admin --password "$PASSWORD"

It gives the admin user an athlete profile (max heart rate, weight: zones and W/kg), publishes
four riders on one workout plan (workouts.rides.simulate, 25 minutes of history, then a second of ride
time every second while it shoots), ends one of them (``POST /api/streams/{name}/end``; the
ended shots are left out on a server without it) and takes PNGs of the front page, the live
page (live and ended) and the group view at desktop (1280x800) and phone (390x844) widths,
with Debian's chromium through Playwright (never a downloaded browser).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import threading
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workouts.rides.simulate import simulate_ride

RIDERS = {"anna": 220, "ben": 300, "chloe": 260, "dev": 240}  # stream name: FTP
ENDED = "dev"
HISTORY_S = 25 * 60
# simulate_ride's hour as a plan (as `manage.py demo_ride` rides it): the group view's session.
PLAN = ("warm-up: 9m 55-75%\nendurance: 9m 70-80%\n3x(on: 4m 100-110%, off: 4m 45-55%)\n"
        "endurance: 12m 70-80%\ncool-down: 6m 45-55%")
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


class Publisher:
    """Each rider's simulated ride: a history at once, then a second a second from a thread."""

    def __init__(self, base: str, token: str) -> None:
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.rides = {name: simulate_ride(duration=3600, ftp=ftp, seed=i) for i, (name, ftp) in enumerate(RIDERS.items())}
        self.t = 0
        self.live = set(RIDERS)
        self.stop = threading.Event()

    def entries(self, name: str, start: int, end: int) -> list[dict]:
        ride = self.rides[name]
        rows = []
        for i in range(start, end):
            row = {"t": int(ride["t"][i])}
            for key in ("power", "heart_rate", "cadence", "speed", "distance"):
                value = float(ride[key][i])
                if not math.isnan(value):
                    row[key] = round(value, 2)
            rows.append(row)
        return rows

    def publish(self, seconds: int) -> None:
        for name in sorted(self.live):
            response = self.client.post(f"/api/streams/{name}/events", json=self.entries(name, self.t, self.t + seconds))
            response.raise_for_status()
        self.t += seconds

    def start(self) -> None:
        plan = self.client.post("/api/plans", json={"name": "Group ride: 4 min on / 4 min off", "text": PLAN})
        plan.raise_for_status()
        for name, ftp in RIDERS.items():
            self.client.delete(f"/api/streams/{name}")  # a fresh ride each time
            self.client.put(f"/api/streams/{name}", json={"ftp": ftp, "plan": plan.json()["id"]}).raise_for_status()
        for _ in range(HISTORY_S // 300):
            self.publish(300)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self.publish(1)

    def end(self, name: str) -> bool:
        self.live.discard(name)
        response = self.client.post(f"/api/streams/{name}/end")
        return response.status_code == 200


def shoot(page, url: str, path: Path, wait_for: str) -> None:
    page.goto(url)
    page.wait_for_selector(wait_for, timeout=20000)
    page.wait_for_timeout(2500)  # a few snapshots: the chart and the numbers settle
    page.screenshot(path=str(path), full_page=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size // 1024} KB")


def login(context, base: str, username: str, password: str) -> None:
    page = context.new_page()
    page.goto(f"{base}/admin/login/?next=/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/")
    page.close()


def give_profile(context, base: str, username: str) -> None:
    """A max heart rate and a weight for the riders' owner (the admin's form, the athlete
    picked by name as a person does): HR zones, W/kg."""
    page = context.new_page()
    page.goto(f"{base}/admin/workouts/athleteprofile/add/")
    page.click("#id_athlete + .select2 .select2-selection")
    page.fill(".select2-search__field", username)
    page.click(f".select2-results__option:text-is('{username}')")
    page.fill("#id_max_heart_rate", "186")
    page.fill("#id_weight_kg", "68")
    page.click("input[name=_save]")
    page.wait_for_load_state()
    page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed: apt-get install chromium")

    from playwright.sync_api import sync_playwright

    group = ",".join(RIDERS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context()
        login(context, args.base, args.username, args.password)
        give_profile(context, args.base, args.username)  # an error page when it has one: no matter
        context.close()
        publisher = Publisher(args.base, args.token)
        publisher.start()
        ended = publisher.end(ENDED)
        for size, viewport in SIZES.items():
            context = browser.new_context(viewport=viewport, device_scale_factor=1)
            login(context, args.base, args.username, args.password)
            page = context.new_page()
            shoot(page, f"{args.base}/", out / f"front-{size}.png", "#rides tr .state[data-state=live]")
            shoot(page, f"{args.base}/live/anna", out / f"live-{size}.png", "#state[data-state=live]")
            shoot(page, f"{args.base}/live/?streams={group}", out / f"group-{size}.png", "#riders tr.live")
            if ended:
                shoot(page, f"{args.base}/live/{ENDED}", out / f"ended-{size}.png", "#state[data-state=ended]")
            context.close()
        browser.close()
    publisher.stop.set()
    if not ended:
        print("this server has no POST /api/streams/{name}/end: the ended shots were left out")


if __name__ == "__main__":
    main()
