"""Static checks that catch real bugs (undefined names, unused imports, syntax errors)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_no_errors():
    beside_python = Path(sys.executable).parent / "ruff"
    ruff = str(beside_python) if beside_python.exists() else shutil.which("ruff")
    assert ruff, "ruff not found: pip install -r requirements/dev.txt"
    result = subprocess.run([ruff, "check", "--select", "F,E9", "--exclude", ".venv", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
