"""The workout page in a real browser against the production server (the fixtures of
tests/test_pages.py): the summary and the chart's axes render, on a desktop and on a phone.
``WORKOUT_SCREENSHOTS=docs/screenshots`` also writes the screenshots the docs show."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import httpx

from tests.test_pages import browser, logged_in_page, server  # noqa: F401 - the fixtures
from workouts.rides.simulate import simulate_ride

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def post_workout(server) -> int:  # noqa: F811
    ride = simulate_ride(duration=3723, ftp=250, seed=2)
    samples = {k: [None if math.isnan(x) else round(x, 2) for x in v.tolist()] for k, v in ride.items()}
    body = {"title": "Tuesday intervals", "started_at": "2026-11-03T17:00:00Z", "ftp": 250, "samples": samples}
    response = httpx.post(f"{server['base']}/api/workouts", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {server['token']}"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_the_workout_page_shows_the_summary_and_a_chart_with_axes(browser, server, tmp_path):  # noqa: F811
    workout_id = post_workout(server)
    shots = Path(os.environ.get("WORKOUT_SCREENSHOTS") or tmp_path)
    for name, viewport in VIEWPORTS.items():
        page = logged_in_page(browser, server, viewport)
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{server['base']}/workouts/{workout_id}")
        assert page.text_content("h1") == "Tuesday intervals"
        summary = {dt.strip(): dd.strip() for dt, dd in zip(page.locator("#summary dt").all_text_contents(),
                                                             page.locator("#summary dd").all_text_contents())}
        assert summary["Duration"] == "1:02:03"
        assert re.fullmatch(r"\d{3} W", summary["NP"]) and re.fullmatch(r"0\.\d\d", summary["IF"])
        assert re.fullmatch(r"\d+\.\d", summary["TSS"]) and summary["Avg HR"].endswith(" bpm")
        assert page.locator("#peaks dt").all_text_contents() == ["5 s", "1 min", "5 min", "20 min"]
        labels = page.locator("svg.workout-chart text").all_text_contents()
        assert {"W", "bpm", "0:00", "1:00", "power (W)", "heart rate (bpm)"} <= set(labels)
        box = page.locator("svg.workout-chart").bounding_box()
        assert box["height"] > 100 and page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        assert not errors, errors  # CSP refused nothing
        if name == "desktop":  # the files download with the page's session
            for kind, first_bytes in (("fit", b".FIT"), ("tcx", b"<?xml")):
                with page.expect_download() as download:
                    page.click(f"#download-{kind}")
                assert download.value.suggested_filename == f"workout-{workout_id}.{kind}"
                assert first_bytes in Path(download.value.path()).read_bytes()[:40]
        page.screenshot(path=str(shots / f"workout-{name}.png"), full_page=True)
        page.close()


def test_the_admin_change_page_shows_the_chart_at_full_size(browser, server, tmp_path):  # noqa: F811
    workout_id = post_workout(server)
    page = logged_in_page(browser, server, VIEWPORTS["desktop"])
    page.goto(f"{server['base']}/admin/workouts/workout/{workout_id}/change/")
    assert page.locator("svg.workout-chart").bounding_box()["width"] >= 600
    assert page.text_content("label[for=id_ftp]").startswith("FTP")
    page.screenshot(path=str(tmp_path / "admin-change.png"), full_page=True)
    page.close()
