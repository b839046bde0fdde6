"""A missing or bad setting stops manage.py and the server with one line naming the variable
(exit status 2), not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_SECRET = {"SECRET_KEY": "", "DEBUG": "false"}  # empty beats a developer's .env (read without overwrite)


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    full.update({"DJANGO_SETTINGS_MODULE": "streamsite.settings", **env})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)


def assert_one_line_naming_secret_key(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("streamsite: SECRET_KEY is not set")
    assert ".env" in lines[0] and "./dev.sh serve" in lines[0]


def test_a_management_command_without_secret_key_prints_one_line_and_exits_2():
    assert_one_line_naming_secret_key(run(["manage.py", "simulate_ride", "x"], **NO_SECRET))


def test_the_server_without_secret_key_prints_one_line_and_exits_2():
    assert_one_line_naming_secret_key(run(["-c", "import streamsite.asgi"], **NO_SECRET))


def test_a_bad_variable_is_one_line_too():
    result = run(["manage.py", "check"], SECRET_KEY="x", DEBUG="maybe")
    assert result.returncode == 2
    assert result.stderr.strip() == "streamsite: DEBUG='maybe' is not a boolean (use true or false)"


def test_a_secret_key_from_the_environment_is_enough_without_debug():
    result = run(["manage.py", "check"], SECRET_KEY="k" * 50, DEBUG="false")
    assert result.returncode == 0, result.stderr
