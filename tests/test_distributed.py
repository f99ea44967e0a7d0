"""`orthoxfer align`, `bench` and `study` under torchrun: two CPU processes talking through gloo.

``per-task`` deals the tasks to the processes and must write, byte for byte, the run
folder one process writes, also when it resumes a run cut off mid-task. ``joint``
shares every batch and averages gradients: its U's are one process's up to float32
rounding (the sums run in another order). ``study`` deals its rows to the processes and
must write the rows and the summary of one process. One-process references run in this
process on one thread, as each torchrun process does (OMP_NUM_THREADS=1), so they
compute alike.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from typer.testing import CliRunner

import orthoxfer.fit.loop as training
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.fit.distributed import Ranks

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TASKS = ("EuroSAT", "MNIST", "DTD")  # three tasks over two processes: the second round leaves rank 1 idle


def torchrun(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """``orthoxfer ARGS`` in two processes, with the tiny arch registered in each (tests/tiny_cli.py)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "ORTHOXFER_CACHE": str(cache),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(ROOT / "tests" / "tiny_cli.py"),
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture
def one_thread(monkeypatch, tmp_path):
    """This process computes as a torchrun process does: one thread; heads cached where the subprocesses find them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ORTHOXFER_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache"
    torch.set_num_threads(threads)


@pytest.fixture
def three_tasks(tmp_path, tiny_arch):
    """Three generated datasets, a source checkpoint, a task vector per task, and `align` arguments for them."""
    from safetensors.torch import save_file
    from test_data_paper import make_dtd, make_eurosat, make_mnist

    from orthoxfer.models.loading import load_model
    from orthoxfer.models.small import small_clip
    from orthoxfer.vectors.sites import find_sites
    from orthoxfer.vectors.taskvector import TaskVector

    make_eurosat(tmp_path / "data", per_class=8)
    make_mnist(tmp_path / "data")
    make_dtd(tmp_path / "data")
    save_file(small_clip(seed=7, layers=1).state_dict(), str(tmp_path / "source.safetensors"))
    sites = find_sites(load_model(f"{tiny_arch}:none").model, "attn")
    vectors = []
    for i, task in enumerate(TASKS):
        g = torch.Generator().manual_seed(i)
        TaskVector({s.name: 0.05 * torch.randn(32, 32, generator=g) for s in sites}, meta={"tasks": [task]}).save(
            tmp_path / f"{task}.safetensors"
        )
        vectors += ["--task-vector", str(tmp_path / f"{task}.safetensors")]
    (tmp_path / "align.toml").write_text("[align]\ncheckpoint_every = 2\nlog_every = 1\n")
    args = [
        "align",
        "--target",
        f"{tiny_arch}:none",
        *vectors,
        "--data-root",
        str(tmp_path / "data"),
        "--heads-dir",
        str(tmp_path / "heads"),
        "--device",
        "cpu",
        "--shots",
        "6",
        "--batch-size",
        "4",
        "--steps",
        "4",
        "--lr",
        "1e-2",
        "--config",
        str(tmp_path / "align.toml"),
    ]
    return tmp_path, args


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_per_task_spreads_the_tasks_and_writes_what_one_process_writes(three_tasks, one_thread, monkeypatch):
    tmp_path, args = three_tasks
    per_task = [*args, "--method", "cayley", "--mode", "per-task"]
    one = runner.invoke(app, [*per_task, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output

    torchrun(*per_task, "--out", str(tmp_path / "two"), cache=one_thread)
    assert files(tmp_path / "two") == files(tmp_path / "one")  # U's, transferred vector, metrics, checkpoints, plots

    # cut off in MNIST's fourth step (its checkpoint holds step 2, its log steps 1-3), resumed by two processes:
    # rank 1 resumes MNIST, holding its writes for rank 0; the folder ends as the uninterrupted one
    real_batch, calls = training.task_batch, []

    def interrupting(*a, **k):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real_batch(*a, **k)

    monkeypatch.setattr(training, "task_batch", interrupting)
    cut = runner.invoke(app, [*per_task, "--out", str(tmp_path / "cut")])
    assert cut.exit_code == 130 and not (tmp_path / "cut" / "alignment.safetensors").exists()
    logged = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["scope"], r["step"]) for r in logged][-3:] == [("MNIST", 1), ("MNIST", 2), ("MNIST", 3)]
    torchrun(*per_task, "--out", str(tmp_path / "cut"), "--resume", cache=one_thread)
    assert files(tmp_path / "cut") == files(tmp_path / "one")


def test_joint_averages_gradients_over_the_shared_batch(three_tasks, one_thread):
    tmp_path, args = three_tasks
    joint = [*args, "--method", "penalty", "--mode", "joint"]
    one = runner.invoke(app, [*joint, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    done = torchrun(*joint, "--out", str(tmp_path / "two"), cache=one_thread)
    assert done.stdout.count("penalty alignment into") == 1  # rank 0 alone prints

    a, b = (Alignment.load(tmp_path / run / "alignment.safetensors") for run in ("one", "two"))
    for site, u in a.matrices().items():
        moved = (u - torch.eye(len(u))).abs().max()
        assert moved > 1e-3  # four steps at lr 1e-2 moved U: agreement below is not agreement at the start
        # float32: eps 1.2e-7 per rounding; four steps of sums in another order stay well inside 1e-6 on entries <= 1
        torch.testing.assert_close(b.matrices()[site], u, rtol=1e-5, atol=1e-6)
    first, second = (
        json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[-1]) for run in ("one", "two")
    )
    assert second["step"] == 4 and second["ce"] == pytest.approx(first["ce"], rel=1e-5)  # the whole batch's loss
    assert sorted(files(tmp_path / "two")) == sorted(files(tmp_path / "one"))


def test_bench_under_torchrun_fills_the_table_of_one_process(three_tasks, one_thread, tiny_arch):
    from orthoxfer.evaluation.baselines import SCALES

    tmp_path, _ = three_tasks
    (tmp_path / "bench.toml").write_text(
        "[finetune]\nlr = 1e-3\nsteps = 2\nwarmup = 1\nbatch_size = 4\n"
        "[align]\nlr = 1e-2\nshots = 5\nbatch_size = 4\naugment = 2\nwarmup = 1\n"
        "[fewshot_ft]\nbatch_size = 4\naugment = 2\nwarmup = 1\n"
        "[bench]\nselect_every = 1\nstep_at_best_scale = true\n"  # the anchored row: every step scored at each lambda
    )
    args = [
        "bench",
        "--suite",
        "paper",
        "--config",
        str(tmp_path / "bench.toml"),
        "--source",
        f"{tiny_arch}:{tmp_path / 'source.safetensors'}",
        "--target",
        f"{tiny_arch}:none",
        "--data-root",
        str(tmp_path / "data"),
        "--tasks",
        ",".join(TASKS),
        "--kinds",
        "embed",
        "--methods",
        "penalty,procrustes",
        "--no-procrustes-init",
        "--anchored",
        "identity",
        "--steps",
        "2",
        "--device",
        "cpu",
    ]
    one = runner.invoke(app, [*args, "--vectors", str(tmp_path / "v1"), "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    torchrun(*args, "--vectors", str(tmp_path / "v2"), "--out", str(tmp_path / "two"), cache=one_thread)

    assert files(tmp_path / "v2") == files(tmp_path / "v1")  # the source vectors, fine-tuned one per process
    assert sorted(files(tmp_path / "two")) == sorted(files(tmp_path / "one"))
    first, second = (json.loads((tmp_path / run / "results.json").read_text())["records"] for run in ("one", "two"))
    assert (
        [r["row"] for r in second]
        == [r["row"] for r in first]
        == [
            "none_target",
            "none_finetune",
            "embed_direct",
            "embed_penalty",
            "embed_penalty_anchored",
            "embed_procrustes",
        ]
    )
    for a, b in zip(first, second):
        assert (b["accuracy"], b["scale"], b.get("chosen_step")) == (a["accuracy"], a["scale"], a.get("chosen_step"))
    assert first[4]["row"] == "embed_penalty_anchored" and first[4]["chosen_step"]
    # the processes that share the anchored row's U's chose one step, scored at its best lambda: rank 0's, logged once
    logs = [
        [
            json.loads(line)
            for line in (tmp_path / run / "rows" / "embed_penalty_anchored-seed0" / "validation.jsonl")
            .read_text()
            .splitlines()
        ]
        for run in ("one", "two")
    ]
    assert [(r["step"], r["scale"]) for r in logs[1]] == [(r["step"], r["scale"]) for r in logs[0]]
    assert len(logs[0]) == 3 and all(r["scale"] in SCALES for r in logs[0])  # start, steps 1 and 2: grid lambdas


TIMING = ("seconds", "seconds_test", "seconds_choose", "row_seconds")


def untimed(record):
    """A study's JSON less what the clock, the machine and the number of processes decide."""
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if k not in (*TIMING, "machine", "processes")}
    return [untimed(v) for v in record] if isinstance(record, list) else record


def test_study_under_torchrun_deals_its_rows_and_writes_the_summary_of_one_process(tmp_path, one_thread):
    (tmp_path / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")  # source vectors in seconds
    args = [
        "study",
        *("--config", str(tmp_path / "fast.toml"), "--size", "micro", "--steps", "1", "--tasks", "mnist"),
        *("--rungs", "data", "--methods", "orthogonal-shift", "--paper-controls", "", "--seeds", "2"),
        *("--anchored", "", "--tune-from", "", "--cache-dir", str(one_thread), "--device", "cpu"),
    ]
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])  # also caches the models and vectors
    assert one.exit_code == 0, one.output
    done = torchrun(*args, "--out", str(tmp_path / "two"), cache=one_thread)
    # six rows a seed: the five other than auto dealt out (rank 1 takes the 2nd and 4th), then auto, which chooses
    # among them
    assert (
        done.stdout.count("dealt to rank 1") == 4 and "data: [6/6] auto (chosen on validation) (seed 1)" in done.stdout
    )

    assert sorted(files(tmp_path / "two" / "data")) == sorted(files(tmp_path / "one" / "data"))
    rows = sorted(p.name for p in (tmp_path / "one" / "data" / "rows").glob("*.json"))
    assert len(rows) == 12
    for name in rows:  # the same seeds, the same rows
        one_row, two_row = (json.loads((tmp_path / run / "data" / "rows" / name).read_text()) for run in ("one", "two"))
        assert untimed(two_row) == untimed(one_row), name
    first, second = (json.loads((tmp_path / run / "study.json").read_text()) for run in ("one", "two"))
    assert (first["meta"]["processes"], second["meta"]["processes"]) == (1, 2)
    assert untimed(second) == untimed(first)
    assert (tmp_path / "two" / "data" / "config.json").read_text() == (
        tmp_path / "one" / "data" / "config.json"
    ).read_text()


def test_shares_of_a_batch_and_commands_that_do_not_share(monkeypatch):
    assert [Ranks(r, 2).part(8) for r in (0, 1)] == [slice(0, 4), slice(4, 8)]
    assert Ranks().part(5) == slice(0, 5)
    with pytest.raises(UsageError, match="--batch-size 6 must be a multiple of the 4 processes"):
        Ranks(1, 4).check_batch(6)
    monkeypatch.setenv("WORLD_SIZE", "2")
    refused = runner.invoke(app, ["version"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert (
        refused.output.strip()
        == "error: `orthoxfer version` runs in one process; under torchrun use align, bench or study"
    )
