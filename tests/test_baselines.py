"""The baselines (one command and one call each) and per-epoch validation while fine-tuning."""

import copy
import json

import pytest
import torch
from test_train import acc, colour_task, settings
from typer.testing import CliRunner

import orthoxfer.fit.loop as training
from orthoxfer.cli import app
from orthoxfer.data import fewshot, paper
from orthoxfer.evaluation import baselines
from orthoxfer.fit.finetune import finetune
from orthoxfer.runs import Run
from orthoxfer.suites import paper as paper_suite

runner = CliRunner()


def test_finetune_scores_held_out_data_every_epoch(tiny, tmp_path):
    train, held_out = colour_task(n=128).split(0.25, seed=0)
    run = Run(tmp_path / "ft")
    tv = finetune(
        copy.deepcopy(tiny), {"colour": train}, settings("embed", steps=30), run, validation={"colour": held_out}
    )
    lines = [json.loads(x) for x in (tmp_path / "ft" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(3, 31, 3))  # 96 images / batch 32 = 3 steps per epoch
    assert lines[0]["epoch"] == 1 and set(lines[-1]["accuracy"]) == {"colour", "mean"}
    assert {r["scale"] for r in lines} == {1.0}  # the update as it is: no lambda grid was given
    assert lines[-1]["accuracy"]["colour"] == pytest.approx(acc(tv.apply_to(copy.deepcopy(tiny)), held_out))
    assert lines[-1]["accuracy"]["mean"] > lines[0]["accuracy"]["mean"]


def test_python_baselines(tiny):
    pool = colour_task(n=64)
    train, val = pool.split(0.25, seed=0)
    tests = {"colour": (pool.head, [pool.batch(torch.arange(64), augment=False)])}
    assert baselines.target_only(tiny, tests)["colour"] == pytest.approx(acc(tiny, pool))
    model, vector = baselines.fewshot_finetune(tiny, {"colour": train}, settings("embed", steps=20))
    assert acc(model, pool) > acc(tiny, pool) and acc(vector.added_to_copy(tiny), pool) == acc(model, pool)
    before = copy.deepcopy(tiny.state_dict())
    chosen = baselines.direct_addition(tiny, vector, {"colour": val}, scales=(0.0, 1.0), limit=1.0)  # no growth
    assert (
        set(chosen.validation) == {0.0, 1.0} and chosen.scale == 1.0 and chosen.validation[1.0] > chosen.validation[0.0]
    )
    assert acc(chosen.model, pool) == acc(model, pool)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())  # the target itself is left alone


def test_target_baseline_command(eurosat_run):
    tmp_path, common, _ = eurosat_run
    result = runner.invoke(app, ["baseline", "target", *common, "--tasks", "eurosat", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert results["baseline"] == "target only" and set(results["accuracy"]) == {"EuroSAT", "mean"}
    again = runner.invoke(app, ["baseline", "target", *common, "--tasks", "eurosat", "--out", str(tmp_path / "t")])
    assert again.exit_code == 2 and "already holds a run" in again.output


def test_direct_baseline_chooses_lambda_without_reading_test_images(eurosat_run, monkeypatch):
    tmp_path, common, _ = eurosat_run
    read = []  # the split each loader iterated over, in order
    real_loader, real_direct = paper.make_loader, baselines.direct_addition

    class Spy:
        def __init__(self, data, *args, **kwargs):
            self.split = getattr(data, "dataset", data).split  # a Subset of the train split, or a test split
            self.loader = real_loader(data, *args, **kwargs)

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            read.append(self.split)
            return iter(self.loader)

    monkeypatch.setattr(paper, "make_loader", Spy)
    monkeypatch.setattr(fewshot, "make_loader", Spy)
    monkeypatch.setattr(paper_suite, "make_loader", Spy)

    def spy(*args, **kwargs):
        assert "test" not in read, "test images were read before lambda was chosen"
        assert "train" in read  # the few-shot pool (train split only) it is chosen on
        return real_direct(*args, **kwargs)

    monkeypatch.setattr(baselines, "direct_addition", spy)
    result = runner.invoke(
        app,
        [
            "baseline",
            "direct",
            *common,
            "--task-vector",
            str(tmp_path / "tv.safetensors"),
            "--shots",
            "10",
            "--scales",
            "0,1",
            "--out",
            str(tmp_path / "d"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert results["scale"] in (0.0, 1.0) and set(results["validation"]) == {"0.0", "1.0"} and "test" in read
    bad = runner.invoke(
        app,
        [
            "baseline",
            "direct",
            *common,
            "--task-vector",
            str(tmp_path / "tv.safetensors"),
            "--scales",
            "a,b",
            "--out",
            str(tmp_path / "d2"),
        ],
    )
    assert bad.exit_code == 2 and "--scales" in bad.output


def test_fewshot_ft_baseline_sees_the_aligners_images(eurosat_run, monkeypatch):
    tmp_path, common, _ = eurosat_run
    seen: dict[str, list] = {"finetune": [], "penalty": []}
    real = training.task_batch

    def record(tasks, step, loop, device, *part):
        task, x, y = real(tasks, step, loop, device, *part)
        seen["current"].append((task.name, x.clone(), y.clone()))
        return task, x, y

    monkeypatch.setattr(training, "task_batch", record)
    loop = ["--shots", "10", "--seed", "3", "--batch-size", "4", "--augment", "2", "--steps", "4"]
    seen["current"] = seen["finetune"]
    ft = runner.invoke(
        app,
        ["baseline", "fewshot-ft", *common, "--tasks", "eurosat", *loop, "--lr", "1e-3", "--out", str(tmp_path / "f")],
    )
    assert ft.exit_code == 0, ft.output
    seen["current"] = seen["penalty"]
    al = runner.invoke(
        app,
        [
            "align",
            *common,
            "--task-vector",
            str(tmp_path / "tv.safetensors"),
            *loop,
            "--method",
            "penalty",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert al.exit_code == 0, al.output
    assert len(seen["finetune"]) == len(seen["penalty"]) == 4
    for (n1, x1, y1), (n2, x2, y2) in zip(seen["finetune"], seen["penalty"]):
        assert n1 == n2 and torch.equal(x1, x2) and torch.equal(y1, y2)
    results = json.loads((tmp_path / "f" / "results.json").read_text())
    assert results["baseline"] == "target few-shot FT" and (tmp_path / "f" / "task_vector.safetensors").is_file()
