"""Ordinary commands print only orthoxfer's own lines: library warnings show with --verbose."""

import subprocess
import sys
import warnings

from orthoxfer.cli.common import library_warnings
from orthoxfer.errors import OrthoxferWarning


def _orthoxfer(*args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter: library warnings fire once per process, on import (geoopt's torch.jit.script)."""
    return subprocess.run(
        [sys.executable, "-m", "orthoxfer", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_a_plain_command_prints_no_warning_line_and_verbose_shows_them(tmp_path):
    missing = tmp_path / "missing.safetensors"
    args = [
        "align",
        "--target",
        "ViT-B-32:none",
        "--task-vector",
        str(missing),
        "--data-root",
        str(tmp_path),
    ]  # the app imports geoopt
    plain = _orthoxfer(*args)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.splitlines() == [
        f"error: {missing}: no such file (expected an orthoxfer task vector .safetensors file)"
    ]
    verbose = _orthoxfer("--verbose", *args)
    assert verbose.returncode == 1 and "FutureWarning" in verbose.stderr


def test_orthoxfers_own_warnings_pass_the_filter():
    with library_warnings(shown=False), warnings.catch_warnings(record=True) as seen:
        warnings.warn("a library's", FutureWarning, stacklevel=1)
        warnings.warn("an unreadable image", OrthoxferWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["an unreadable image"]
