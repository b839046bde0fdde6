"""Static checks that catch real bugs (undefined names, unused imports, syntax errors)."""

import subprocess
from pathlib import Path

from tests.helpers import venv_tool

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_no_errors():
    ruff = venv_tool("ruff")
    assert ruff, "ruff not found: pip install -r requirements/dev.txt"
    result = subprocess.run([ruff, "check", "--select", "F,E9", "--exclude", ".venv", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_floor_plan_holds():
    """`.importlinter`: the four packages and the rooms of streams and workouts import only
    downwards (imports inside functions count), nothing imports streamsite, the settings load
    no models or metrics, the training metrics stay pure."""
    lint_imports = venv_tool("lint-imports")
    assert lint_imports, "lint-imports not found: pip install -r requirements/dev.txt"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_broken_floor_is_caught(tmp_path):
    """The check itself can fail: a contract that the code breaks is reported broken."""
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    streams\n    streamsite\n\n"
        "[importlinter:contract:upside-down]\nname = upside down\ntype = layers\n"
        "containers = streams\nlayers =\n    core\n    live\n"
    )
    result = subprocess.run([venv_tool("lint-imports"), "--no-cache", "--config", str(config)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "BROKEN" in result.stdout
