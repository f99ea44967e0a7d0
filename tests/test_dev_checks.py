"""`.ci/run` ends with ruff check, ruff format --check and mypy: each must fail on what it is there to catch.

Each check runs on one tiny file in a temporary folder, with the project's own configuration
(pyproject.toml), as CI runs it on the package.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return found


def _mypy(path: Path, cache: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    command = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), "--cache-dir", str(cache), str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=path.parent)


def test_the_ci_script_runs_every_check_after_the_tests():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    checks = [
        "ruff check orthoxfer tests benchmarks mkdocs_hooks",
        "ruff format --check orthoxfer tests benchmarks mkdocs_hooks",
        "mypy orthoxfer",
    ]
    assert all(c in lines for c in checks)
    assert lines.index(checks[0]) < lines.index(checks[1]) < lines.index(checks[2])
    assert "set -euo pipefail" in lines  # a failing check fails the script


def test_mypy_with_the_project_config_fails_on_a_type_error(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("def half(x: int) -> float:\n    return x / 2\n")
    assert _mypy(good, tmp_path / "cache").returncode == 0
    bad = tmp_path / "bad.py"
    bad.write_text("def half(x: int) -> float:\n    return x / 2\n\n\nhalf('two')\n")
    done = _mypy(bad, tmp_path / "cache")
    assert done.returncode != 0
    assert "arg-type" in done.stdout


def test_ruff_with_the_project_config_fails_on_an_unused_import_and_on_unformatted_code(tmp_path):
    ruff = _ruff()
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nx = 1\n")
    done = subprocess.run([ruff, "check", "--config", str(CONFIG), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "F401" in done.stdout
    ugly = tmp_path / "ugly.py"
    ugly.write_text("x = {'a':1}\n")
    done = subprocess.run(
        [ruff, "format", "--check", "--config", str(CONFIG), str(ugly)], capture_output=True, text=True
    )
    assert done.returncode != 0
    fine = tmp_path / "fine.py"
    fine.write_text('x = {"a": 1}\n')
    assert subprocess.run([ruff, "check", "--config", str(CONFIG), str(fine)], capture_output=True).returncode == 0
    assert (
        subprocess.run([ruff, "format", "--check", "--config", str(CONFIG), str(fine)], capture_output=True).returncode
        == 0
    )
