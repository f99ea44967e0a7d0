"""Guarantees under faults: atomic artifacts, bit-identical reruns, nothing executed from files."""

import os
import pickle

import pytest
import torch
from test_cli_align import runner

from orthoxfer.artifacts import ArtifactError, atomic_write, save_artifact, write_json
from orthoxfer.cli import app
from orthoxfer.vectors.taskvector import TaskVector


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "tv.safetensors"

    def disk_full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, disk_full)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_keeps_the_previous_artifact(tmp_path, monkeypatch):
    path = tmp_path / "a.safetensors"
    save_artifact(path, "task_vector", {"dense/x": torch.ones(2, 2)}, {"sites": ["x"], "scale": 1.0, "kind": "dense"})
    before = path.read_bytes()
    import orthoxfer.artifacts as artifacts

    monkeypatch.setattr(artifacts, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        save_artifact(
            path, "task_vector", {"dense/x": torch.zeros(2, 2)}, {"sites": ["x"], "scale": 1.0, "kind": "dense"}
        )
    assert path.read_bytes() == before


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle payload executed')",))


def test_a_pickle_is_refused_without_being_executed(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ArtifactError, match="not a valid orthoxfer task vector file"):
        TaskVector.load(path)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1 and "not a valid orthoxfer task vector file" in result.output


@pytest.mark.numerics
def test_two_runs_with_one_seed_write_identical_artifacts(align_setup):
    tmp_path, common, tv = align_setup
    outs = []
    for name in ("one", "two"):
        out = tmp_path / name
        result = runner.invoke(app, [*common, "--method", "riemannian", "--lr", "0.01", "--out", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(out)
    for artifact in ("alignment.safetensors", "transferred.safetensors"):
        assert (outs[0] / artifact).read_bytes() == (outs[1] / artifact).read_bytes(), artifact


def test_sigterm_stops_a_command_like_ctrl_c(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import time, typer\n"
        "from orthoxfer.cli.common import reports_errors\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "@reports_errors\n"
        "def work():\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "app()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err


def test_an_atomic_write_gets_the_permissions_of_a_plain_write(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "results.json", {"a": 1})
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = (tmp_path / "results.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o640  # not the temp file's private 0600
