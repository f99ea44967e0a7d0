"""The benchmark end to end on the micro mini suite: every stage, the outputs, resume, no test data in selection."""

import csv
import json

import pytest
from typer.testing import CliRunner

import orthoxfer.experiments.bench as bench_module
from orthoxfer.cli import app

runner = CliRunner()


def test_micro_bench_writes_every_output_with_its_columns(micro_run):
    root, _, result = micro_run
    run = root / "run"
    for name in ("results.json", "results.csv", "results.md", "accuracy.png", "orthogonality.png", "config.json"):
        assert (run / name).is_file(), name
    data = json.loads((run / "results.json").read_text())
    labels = [e["label"] for e in data["summary"]]
    assert labels[:3] == ["target only", "target few-shot FT", "embed, direct addition"]
    assert "embed, penalty (init procrustes)" in labels and "embed, procrustes" in labels
    assert "embed, penalty [control: norm]" in labels and "lora, penalty" in labels
    penalty = next(e for e in data["summary"] if e["label"] == "embed, penalty")
    assert set(penalty["accuracy"]) == {"mnist", "coins", "mean"} and "norm" in penalty["transfer_gain"]
    assert penalty["orth_error"] > 0 and penalty["rank_kept"] == "8/8"
    header = next(csv.reader((run / "results.csv").open()))
    assert header[:4] == ["method", "mnist", "coins", "mean"] and "gain vs norm" in header and "norm ratio" in header
    assert "top-1 %" in result.output and "diagnostics" in result.output
    # the transferability check from the rows the bench computed anyway: direct addition against target only
    rows = {r["row"]: r for r in data["records"]}
    gains = {
        t: rows["embed_direct"]["validation_score"][t] - rows["none_target"]["validation_score"][t]
        for t in rows["none_target"]["validation_score"]
    }
    assert {t: m for t, (m, _) in data["transferability"]["per_task"].items()} == pytest.approx(gains)
    assert "Transferability (validation gain" in (run / "results.md").read_text()
    assert "Transferability (validation gain" in " ".join(result.output.split())
    # the mini suite's default mode: each task its own vector, U's and lambda (chosen on that task's validation part)
    record = json.loads((run / "rows" / "embed_penalty-seed0.json").read_text())
    assert set(record["scale"]) == set(record["validation"]) == {"mnist", "coins"}
    assert json.loads((run / "config.json").read_text())["bench"]["mode"] == "per-task"
    from orthoxfer.alignment.artifact import Alignment

    alignment = Alignment.load(run / "rows" / "embed_penalty-seed0" / "alignment.safetensors")
    assert alignment.scopes == ["mnist", "coins"] and alignment.meta["steps"] == 1  # 2 joint steps shared by 2 tasks


def test_the_transferability_check_takes_each_tasks_best_data_free_transfer_and_never_a_control():
    from orthoxfer.report.tables import free_gains, transferability_check

    def row(method, scores, seed=0, control=""):
        return {"method": method, "seed": seed, "control": control, "validation_score": scores}

    seed0 = [
        row("target", {"a": 0.2, "b": 0.5}),
        row("direct", {"a": 0.6, "b": 0.4}),
        row("transfusion", {"a": 0.3, "b": 0.7}),
        row("direct", {"a": 0.9, "b": 0.9}, control="spectrum"),  # a control carries nothing of the vector's
        row("penalty", {"a": 1.0, "b": 1.0}),  # a trained row is no check made before training
    ]
    assert free_gains(seed0, ["a", "b"]) == pytest.approx({"a": 0.4, "b": 0.2})
    assert free_gains(seed0[1:], ["a", "b"]) is None  # no target row: nothing to measure the gain from
    seed1 = [row("target", {"a": 0.2, "b": 0.5}, 1), row("direct", {"a": 0.8, "b": 0.5}, 1)]
    check = transferability_check(seed0 + seed1, ["a", "b"])
    assert check["per_task"]["a"][0] == pytest.approx(0.5) and check["mean"][0] == pytest.approx((0.3 + 0.3) / 2)


def test_rerun_with_resume_reuses_rows_and_changed_settings_are_refused(micro_run):
    root, args, _ = micro_run
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    rows = len(json.loads((root / "run" / "results.json").read_text())["summary"])
    assert again.output.count("reused") == rows == 12
    changed = runner.invoke(app, [*[a if a != "2" else "3" for a in args], "--resume"])
    assert changed.exit_code == 2 and "settings differ" in changed.output


def spied_inputs(root):
    """The micro suite's mnist inputs, and a list that records each reading of test data (by task name)."""
    from orthoxfer.fit.finetune import FinetuneSettings
    from orthoxfer.suites import build_suite, default_tables
    from orthoxfer.suites.base import SuiteRequest

    source_ft = FinetuneSettings(**default_tables("mini", "micro")["finetune"])
    request = SuiteRequest(
        seed=0,
        shots=24,
        size="micro",
        tasks=("mnist",),
        kinds=("embed",),
        source_ft=source_ft,
        cache_dir=root / "cache",
    )
    inputs = build_suite("mini", request)
    opened = []
    for task in inputs.tasks:
        head, make = task.test
        task.test = (head, lambda make=make, name=task.name: opened.append(name) or make())
    return inputs, opened


def test_scale_is_chosen_without_touching_test_data(micro_run, monkeypatch):
    root, _, _ = micro_run
    from orthoxfer.experiments.bench import BenchConfig, Row, run_row
    from orthoxfer.runs import Run

    inputs, opened = spied_inputs(root)
    real_addition = bench_module.direct_addition

    def spy(model, vector, validation, scales, device):
        assert opened == [], "test data was read before lambda was chosen"
        assert set(validation) == {"mnist"}
        return real_addition(model, vector, validation, scales, device)

    monkeypatch.setattr(bench_module, "direct_addition", spy)
    record = run_row(Row("embed", "direct"), inputs, BenchConfig(), Run(root / "spy"), seed=0)
    assert opened == ["mnist", "mnist"] and record["scale"] is not None  # at the chosen lambda, then at 1


def test_tie_options_are_rows_with_their_own_controls_and_gains():
    from orthoxfer.experiments.bench import BenchConfig, Row
    from orthoxfer.report.tables import summarise_rows

    config = BenchConfig(
        methods=("penalty",), kinds=("embed",), controls=("norm",), ties=("site", "block"), procrustes_init=False
    )
    rows = config.rows()
    assert Row("embed", "penalty", tie="block") in rows and Row("embed", "penalty", control="norm", tie="block") in rows
    assert Row("embed", "penalty", tie="block").label == "embed, penalty (tie block)"
    records = [
        {
            "row": r.id,
            "label": r.label,
            **{k: getattr(r, k) for k in ("kind", "method", "init", "control", "tie")},
            "seed": seed,
            "accuracy": {"t": acc, "mean": acc},
            "scale": 1.0,
            "seconds": 1.0,
        }
        for seed in (0, 1)
        for r, acc in zip(rows, (0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.4))
    ]
    summary = {e["label"]: e for e in summarise_rows(records, ["t"])}
    assert summary["embed, penalty"]["transfer_gain"]["norm"][0] == pytest.approx(0.2)
    assert summary["embed, penalty (tie block)"]["transfer_gain"]["norm"][0] == pytest.approx(0.3)
    with pytest.raises(Exception, match="unknown tie"):
        BenchConfig(ties=("layer",))


def test_lr_grid_is_chosen_on_validation_for_aligners_and_fewshot_ft_alike(micro_run, monkeypatch):
    root, _, _ = micro_run
    from orthoxfer.experiments.bench import BenchConfig, Row, run_row
    from orthoxfer.runs import Run

    inputs, opened = spied_inputs(root)
    config = BenchConfig(lrs=(1e-4, 1e-2))
    config.align.steps = config.fewshot_ft.steps = 2
    run = Run(root / "grid")
    for row in (Row("", "finetune"), Row("embed", "penalty")):
        record = run_row(row, inputs, config, run, seed=0)
        tried = record["lr_validation"]
        assert {"0.0001", "0.01"} <= set(tried) and len(tried) <= 4 and f"{record['lr']:g}" in tried
        assert tried[f"{record['lr']:g}"] == max(tried.values())
        assert (root / "grid" / "rows" / f"{row.id}-seed0-lr0.01").is_dir()
    assert len(opened) == 2  # test data read once per row, after the choice
    assert "lr" not in run_row(Row("embed", "procrustes"), inputs, config, run, seed=0)


@pytest.mark.parametrize(
    ("peak", "tried"),
    [
        (1e-4, ["0.000111111", "0.000333333", "0.001", "0.003", "0.01"]),  # the smallest won outright: down, twice
        (1.0, ["0.001", "0.003", "0.01", "0.03", "0.09"]),  # the largest won: up, twice
        (3e-3, ["0.001", "0.003", "0.01"]),  # inside: no growth
        (None, ["0.001", "0.003", "0.01"]),  # a tie goes to the smallest rate, which did not win outright: none
    ],
)
def test_an_lr_grid_grows_past_the_edge_that_won_and_only_then(monkeypatch, peak, tried):
    import math

    from orthoxfer.experiments.bench import BenchConfig, Row, choose_row

    def fit(row, inputs, config, run, seed, train, val, lr, own_folder):  # validation peaks at ``peak``
        return {}, 0.5 if peak is None else -abs(math.log(lr / peak)), {}

    monkeypatch.setattr(bench_module, "split_pools", lambda inputs, fraction, seed: ({}, {}))
    monkeypatch.setattr(bench_module, "_fit", fit)
    _, record = choose_row(Row("embed", "penalty"), None, BenchConfig(lrs=(1e-3, 3e-3, 1e-2)), None, seed=0)
    assert list(record["lr_validation"]) == tried
    best = max(tried, key=lambda lr: record["lr_validation"][lr])
    assert record["lr"] == pytest.approx(float(best), rel=1e-5)


def test_a_config_sets_the_anchored_rows_beta_and_a_rate_per_method_and_the_rows_use_them(micro_run, tmp_path):
    import torch

    from orthoxfer.errors import UsageError
    from orthoxfer.experiments import bench_settings
    from orthoxfer.experiments.bench import Row, run_row
    from orthoxfer.runs import Run

    root, _, _ = micro_run
    config = tmp_path / "chosen.toml"
    config.write_text("[bench]\nanchor = 10.0\n[bench.rates]\npenalty = 0.02\nfinetune = 0.005\n")
    settings = bench_settings.resolve_bench("mini", "micro", torch.device("cpu"), config, tasks=2)
    assert settings.bench.anchor == {"anchor": 10.0, "select_every": 10}  # the interval kept where not given
    assert settings.record()["bench"]["rates"] == {"penalty": 0.02, "finetune": 0.005}  # in config.json: resume sees it
    bench = settings.bench
    bench.align.steps = bench.fewshot_ft.steps = 2
    inputs, _ = spied_inputs(root)
    run = Run(tmp_path / "run")
    assert run_row(Row("embed", "penalty"), inputs, bench, run, seed=0)["lr"] == 0.02
    assert run_row(Row("", "finetune"), inputs, bench, run, seed=0)["lr"] == 0.005
    assert "lr" not in run_row(Row("embed", "direct"), inputs, bench, run, seed=0)
    for bad in ("procrustes = 0.1", "penalty = -1.0", "nonsense = 0.1"):
        config.write_text(f"[bench.rates]\n{bad}\n")
        with pytest.raises(UsageError, match="not a positive rate of a trained method"):
            bench_settings.resolve_bench("mini", "micro", torch.device("cpu"), config, tasks=2)


def test_a_config_scores_the_chosen_steps_at_every_lambda_of_the_grid(micro_run, tmp_path, monkeypatch):
    """``step_at_best_scale``: the anchored rows and few-shot FT try each scored step at the bench's lambdas; off (the
    default, as study-v2's rows were made), at the training scale."""
    import torch

    import orthoxfer.experiments.tune as tune_module
    import orthoxfer.strategies.trained as trained_module
    from orthoxfer.experiments import bench_settings
    from orthoxfer.experiments.bench import Row, run_row
    from orthoxfer.runs import Run

    seen: list[tuple[str, tuple]] = []
    real_train, real_finetune = trained_module.train_transforms, tune_module.fewshot_finetune

    def train_transforms(strategy, problem, *args):  # each task's scope, as the per-task rows fit them
        seen.append((problem.scope, problem.validation_scales))
        return real_train(strategy, problem, *args)

    def fewshot_finetune(model, train, settings, run, validation=None, validation_scales=()):
        seen.append((f"finetune {', '.join(train)}", validation_scales))
        return real_finetune(model, train, settings, run, validation=validation, validation_scales=validation_scales)

    monkeypatch.setattr(trained_module, "train_transforms", train_transforms)
    monkeypatch.setattr(tune_module, "fewshot_finetune", fewshot_finetune)
    root, _, _ = micro_run
    inputs, _ = spied_inputs(root)
    config = tmp_path / "joint.toml"
    for text, expected in (("step_at_best_scale = true\n", (0.5, 1.0)), ("", ())):
        config.write_text(f"[bench]\nscales = [0.5, 1.0]\n{text}")
        settings = bench_settings.resolve_bench("mini", "micro", torch.device("cpu"), config, tasks=2)
        bench = settings.bench
        bench.align.steps = bench.fewshot_ft.steps = 2
        run = Run(tmp_path / f"run{len(seen)}")
        seen.clear()
        run_row(Row("embed", "penalty", anchored=True), inputs, bench, run, seed=0)
        run_row(Row("", "finetune"), inputs, bench, run, seed=0)
        assert seen == [("mnist", expected), ("finetune mnist", expected)]  # a task's scope, its own few-shot FT


def test_the_other_task_control_with_one_task_is_refused_before_any_row(micro_run, tmp_path):
    root, args, _ = micro_run
    one = [a.replace("mnist,coins", "mnist").replace("norm", "other-task") for a in args]
    one[one.index("--out") + 1] = str(tmp_path / "run")
    result = runner.invoke(app, one)
    assert result.exit_code == 2, result.output
    assert "other-task control needs two or more tasks" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before the folder: the same command with another control runs


def test_a_run_on_fewer_mini_tasks_gives_each_the_same_budget_and_bench_passes_its_tasks(monkeypatch):
    import torch

    from orthoxfer.errors import UsageError
    from orthoxfer.experiments import bench_settings

    cpu = torch.device("cpu")
    for suite in ("mini", "planted"):
        for tasks, steps, warmup in ((None, 800, 80), (4, 400, 80), (1, 100, 20)):
            tables = bench_settings.resolve_bench(suite, "full", cpu, tasks=tasks).tables
            assert tables["align"]["steps"] == tables["fewshot_ft"]["steps"] == steps
            assert tables["align"]["warmup"] == tables["fewshot_ft"]["warmup"] == warmup
    paper = bench_settings.resolve_bench("paper", "full", cpu).tables
    assert bench_settings.resolve_bench("paper", "full", cpu, tasks=2).tables == paper  # the reference code's budget
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise UsageError("stop here")

    monkeypatch.setattr(bench_settings, "resolve_bench", spy)
    result = runner.invoke(app, ["bench", "--suite", "mini", "--tasks", "mnist,coins,scenes", "--device", "cpu"])
    assert result.exit_code == 2 and seen["tasks"] == 3
    demo = runner.invoke(app, ["demo"])
    assert demo.exit_code == 2 and seen["tasks"] == 4  # the demo's four headroom tasks


def test_the_demo_resolves_the_settings_its_committed_table_ran_with(monkeypatch, tmp_path):
    """``orthoxfer demo`` resumes its folder: a default that drifted from benchmarks/results/demo-mini is refused there."""
    import shutil
    from pathlib import Path

    import orthoxfer.suites as suites
    from orthoxfer.errors import UsageError

    def stop(*args, **kwargs):
        raise UsageError("stop here")

    monkeypatch.setattr(suites, "build_suite", stop)  # after the run folder accepted the settings
    committed = Path(__file__).parents[1] / "benchmarks" / "results" / "demo-mini" / "config.json"
    (tmp_path / "demo").mkdir()
    shutil.copy(committed, tmp_path / "demo" / "config.json")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2 and "stop here" in result.output, result.output
