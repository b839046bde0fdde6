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
