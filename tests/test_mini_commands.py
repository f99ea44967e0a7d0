"""align, eval, baseline and diagnose on the offline mini suite through the CLI (micro size: seconds)."""

import json
import shlex

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.evaluation.accuracy import evaluate
from orthoxfer.suites import open_suite
from orthoxfer.suites.base import SuiteRequest
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """`align --suite mini` as README's quick start runs it, at micro size and 2 steps."""
    root = tmp_path_factory.mktemp("mini")
    mini = ["--suite", "mini", "--size", "micro", "--cache-dir", str(root / "cache")]
    args = [
        "align",
        *mini,
        "--target",
        "mini:b",
        "--task-vector",
        "mini:surfaces",
        "--method",
        "penalty",
        "--alpha",
        "1.0",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(root / "run"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, mini, result.output


def test_align_makes_the_models_and_the_vector_and_writes_a_run(aligned):
    root, _, output = aligned
    for name in (
        "alignment.safetensors",
        "transferred.safetensors",
        "metrics.jsonl",
        "diagnostics.json",
        "config.json",
    ):
        assert (root / "run" / name).is_file(), name
    config = json.loads((root / "run" / "config.json").read_text())
    assert config["suite"] == "mini" and config["size"] == "micro" and config["tasks"] == ["surfaces"]
    assert config["lr"] == 1e-2 and config["shots"] == 24  # the mini suite's defaults, not the paper's
    (vector_file,) = (root / "cache" / "mini-vectors").iterdir()
    assert vector_file.name.startswith("surfaces-embed-")
    transferred = TaskVector.load(root / "run" / "transferred.safetensors")
    assert transferred.meta["target"] == "mini:b" and len(transferred.sites) == 8  # 2 blocks x q, k, v, out
    assert "evaluate: orthoxfer eval --suite mini --size micro" in output


def test_the_printed_eval_command_scores_the_transferred_vector(aligned, tmp_path):
    root, _, output = aligned
    line = next(line for line in output.splitlines() if line.startswith("evaluate: orthoxfer eval"))
    args = shlex.split(line.removeprefix("evaluate: orthoxfer "))
    result = runner.invoke(app, [*args, "--device", "cpu", "--no-progress", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["accuracy"]) == {"surfaces", "mean"} and results["suite"] == "mini"

    suite = open_suite("mini", SuiteRequest(size="micro", cache_dir=root / "cache"))
    model = suite.load("mini:b")
    tests = suite.test_sets(model, suite.test_data(["surfaces"]))  # heads before the vector is added
    TaskVector.load(root / "run" / "transferred.safetensors").apply_to(model.model)
    assert results["accuracy"]["surfaces"] == evaluate(model.model, tests, progress=False)["surfaces"]


def test_diagnose_reads_a_mini_vector_by_name(aligned):
    root, _, _ = aligned
    alignment = str(root / "run" / "alignment.safetensors")
    args = [
        "diagnose",
        "--task-vector",
        "mini:surfaces",
        "--alignment",
        alignment,
        "--size",
        "micro",
        "--cache-dir",
        str(root / "cache"),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    stored = json.loads((root / "run" / "diagnostics.json").read_text())
    assert report["aggregate"] == stored["aggregate"]  # the name resolves to the vector align carried
    assert len(list((root / "cache" / "mini-vectors").iterdir())) == 1  # read from the cache, not made again


def test_baselines_on_the_mini_suite(aligned, tmp_path):
    _, mini, _ = aligned
    common = [*mini, "--target", "mini:b", "--tasks", "surfaces", "--device", "cpu"]
    runs = {
        "target": [],
        "direct": ["--task-vector", "mini:surfaces", "--scales", "0,1"],
        "fewshot-ft": ["--steps", "2"],
    }
    accuracy = {}
    for name, extra in runs.items():
        result = runner.invoke(app, ["baseline", name, *common, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        accuracy[name] = json.loads((tmp_path / name / "results.json").read_text())["accuracy"]
        assert set(accuracy[name]) == {"surfaces", "mean"}
    plain = runner.invoke(
        app,
        ["eval", *mini, "--model", "mini:b", "--tasks", "surfaces", "--no-progress", "--out", str(tmp_path / "eval")],
    )
    assert plain.exit_code == 0, plain.output
    assert accuracy["target"] == json.loads((tmp_path / "eval" / "results.json").read_text())["accuracy"]


def test_direct_on_the_mini_suite_chooses_lambda_on_its_validation_sets(aligned, tmp_path, monkeypatch):
    from orthoxfer.data import mini_pools
    from orthoxfer.data.mini import mini_task
    from orthoxfer.evaluation import baselines

    _, mini, _ = aligned
    real, seen = baselines.direct_addition, []
    monkeypatch.setattr(
        baselines,
        "direct_addition",
        lambda target, vector, validation, *a: seen.append(validation) or real(target, vector, validation, *a),
    )
    common = [
        "baseline",
        "direct",
        *mini,
        "--target",
        "mini:b",
        "--tasks",
        "surfaces",
        "--task-vector",
        "mini:surfaces",
        "--scales",
        "0,1",
        "--device",
        "cpu",
    ]
    own = runner.invoke(app, [*common, "--out", str(tmp_path / "own")])
    held = runner.invoke(app, [*common, "--val-fraction", "0.25", "--out", str(tmp_path / "held")])
    assert own.exit_code == 0 and held.exit_code == 0, own.output + held.output
    assert (
        "chosen on the suite's validation sets" in own.output and "held-out 0.25 of each few-shot pool" in held.output
    )
    task = mini_task("surfaces", "micro")
    val_idx, rest = mini_pools.reserved(task)[1:]
    assert torch.equal(seen[0]["surfaces"].images, task.train_images[val_idx])  # the fixed set, apart from every pool
    pool_part = seen[1]["surfaces"].images  # a part of the pool: images from the rest only
    assert len(pool_part) == 6 and all(any(torch.equal(img, r) for r in task.train_images[rest]) for img in pool_part)
    assert json.loads((tmp_path / "own" / "results.json").read_text())["chosen_on"] == "the suite's validation sets"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--suite", "mini", "--target", "mini:c", "--task-vector", "mini:surfaces"], "models are mini:a"),
        (
            ["--suite", "mini", "--target", "mini:b", "--task-vector", "mini:cifar"],
            "unknown mini task vector 'mini:cifar'",
        ),
        (
            ["--suite", "mini", "--target", "mini:b", "--task-vector", "mini:surfaces", "--data-root", "."],
            "--data-root is for --suite paper",
        ),
        (["--target", "mini:b", "--task-vector", "mini:surfaces"], "--data-root is needed for --suite paper"),
        (["--suite", "tiny", "--target", "mini:b", "--task-vector", "mini:surfaces"], "unknown suite 'tiny'"),
        (
            ["--suite", "planted", "--target", "mini:b", "--task-vector", "mini:surfaces"],
            "runs only in `orthoxfer bench`",
        ),
    ],
)
def test_wrong_suite_names_are_one_line_usage_errors(extra, message, tmp_path):
    result = runner.invoke(
        app, ["align", "--size", "micro", "--cache-dir", str(tmp_path), *extra, "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "mini").exists()  # refused before anything was pre-trained
