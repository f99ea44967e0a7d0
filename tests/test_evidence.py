"""How the study measures: transfer-then-tune, auto, the grids that grow at their edge, one code version per run."""

import json

import pytest
import torch
from test_bench import spied_inputs

from orthoxfer.errors import UsageError
from orthoxfer.evaluation import baselines
from orthoxfer.experiments.auto import choose
from orthoxfer.experiments.bench import BenchConfig, Row, run_row
from orthoxfer.experiments.bench_run import run_bench
from orthoxfer.runs import Run


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    config = BenchConfig(mode="per-task", kinds=("embed",))
    config.align.steps = config.fewshot_ft.steps = 2
    config.fewshot_ft.batch_size = config.align.batch_size = 8
    return root, config


def test_transfer_then_tune_at_lambda_zero_is_fewshot_ft(micro):
    root, config = micro
    inputs, _ = spied_inputs(root)
    fixed = BenchConfig(mode="per-task", kinds=("embed",), scales=(0.0,))
    fixed.align, fixed.fewshot_ft = config.align, config.fewshot_ft
    tuned = run_row(Row("embed", "tune", "direct"), inputs, fixed, Run(root / "tune"), seed=0)
    ft = run_row(Row("", "finetune"), inputs, fixed, Run(root / "ft"), seed=0)
    assert tuned["scale"] == {"mnist": 0.0} and ft["scale"] == {"mnist": 0.0}
    assert tuned["accuracy"] == ft["accuracy"]
    assert tuned["validation_score"] == ft["validation_score"]
    assert "chosen_step" not in ft  # no step chosen: the last one kept


def test_fewshot_rows_record_the_step_chosen_on_validation(micro):
    root, config = micro
    inputs, _ = spied_inputs(root)
    chosen = BenchConfig(mode="per-task", kinds=("embed",))
    chosen.align, chosen.fewshot_ft = config.align, config.fewshot_ft.replace(select_every=1)
    for row in (Row("", "finetune"), Row("embed", "tune", "direct")):
        record = run_row(row, inputs, chosen, Run(root / f"steps-{row.id}"), seed=0)
        lines = (root / f"steps-{row.id}" / "rows" / f"{row.id}-seed0" / "task-mnist" / "validation.jsonl").read_text()
        curve = [json.loads(line) for line in lines.splitlines()]
        best = max(curve, key=lambda c: (c["accuracy"]["mean"], -c["step"]))  # ties to the earliest
        assert [c["step"] for c in curve] == [0, 1, 2] and record["chosen_step"] == {"mnist": best["step"]}, row


def test_fewshot_ft_is_per_task_in_per_task_mode_and_gets_lambda(micro):
    root, config = micro
    inputs, opened = spied_inputs(root)
    record = run_row(Row("", "finetune"), inputs, config, Run(root / "ft-lambda"), seed=0)
    assert set(record["validation"]["mnist"]) >= {str(s) for s in baselines.SCALES}
    assert (root / "ft-lambda" / "rows" / "none_finetune-seed0" / "task-mnist").is_dir()
    assert opened == ["mnist"]


def _record(row, scores, accuracy):
    return {"row": row, "control": "", "method": row, "validation_score": scores, "accuracy": accuracy}


def test_auto_picks_the_best_validation_candidate_and_never_its_test_accuracy():
    records = [
        _record("a", {"x": 0.9, "y": 0.1}, {"x": 0.1, "y": 0.9}),
        _record("b", {"x": 0.2, "y": 0.8}, {"x": 0.99, "y": 0.2}),
        {**_record("c", {"x": 1.0, "y": 1.0}, {"x": 1.0, "y": 1.0}), "control": "spectrum"},  # never a candidate
    ]
    auto = choose(records, ["x", "y"])
    assert auto["chosen"] == {"x": "a", "y": "b"}
    assert auto["accuracy"] == {"x": 0.1, "y": 0.2, "mean": pytest.approx(0.15)}
    assert set(auto["candidates"]) == {"a", "b"}


def test_the_auto_row_of_a_bench_reads_no_test_data(micro, monkeypatch):
    root, config = micro
    inputs, opened = spied_inputs(root)
    auto_config = BenchConfig(mode="per-task", kinds=("embed",), methods=("procrustes",), auto=True)
    auto_config.align, auto_config.fewshot_ft = config.align, config.fewshot_ft
    import orthoxfer.experiments.bench as bench

    real = bench.test_accuracy
    calls = []
    monkeypatch.setattr(bench, "test_accuracy", lambda *a: calls.append(1) or real(*a))
    records = run_bench(inputs, auto_config, Run(root / "auto"), [0], progress=lambda _: None)
    auto = records[-1]
    assert auto["method"] == "auto" and auto["chosen"]["mnist"] in {r["row"] for r in records[:-1]}
    assert len(calls) == len(records) - 1 + 1  # one per computed row, plus direct's lambda = 1; none for auto
    best = max(records[:-1], key=lambda r: r["validation_score"]["mnist"])
    assert auto["validation_score"]["mnist"] == best["validation_score"]["mnist"]


class ScaleAsWeight:
    """A stand-in vector: the model it gives carries lambda as its one weight, so a score can read lambda back."""

    def added_to_copy(self, model, scale):
        copy = torch.nn.Linear(1, 1)
        with torch.no_grad():
            copy.weight.fill_(scale)
        return copy


def test_the_lambda_grid_grows_when_its_edge_wins(monkeypatch):
    def score(model, validation, device):  # better up to lambda = 3, flat after
        return {"mean": min(float(model.weight.item()), 3.0)}

    monkeypatch.setattr(baselines, "pool_accuracy", score)
    target = torch.nn.Linear(1, 1)
    grown = baselines.direct_addition(target, ScaleAsWeight(), {}, (0.0, 1.0, 2.0))
    assert set(grown.validation) == {0.0, 1.0, 2.0, 3.0, 4.0} and grown.scale == 3.0  # ties: the smaller lambda
    fixed = baselines.direct_addition(target, ScaleAsWeight(), {}, (1.0,))
    assert set(fixed.validation) == {1.0} and fixed.scale == 1.0
    inside = baselines.direct_addition(target, ScaleAsWeight(), {}, (0.0, 4.0, 8.0))
    assert set(inside.validation) == {0.0, 4.0, 8.0}  # 4.0 ties 8.0 and wins as the smaller: no edge, no growth


def test_a_resume_under_other_code_is_refused_unless_allowed(tmp_path, monkeypatch):
    import orthoxfer.runs as runs

    Run(tmp_path / "r").write_config({"a": 1})
    assert json.loads((tmp_path / "r" / "config.json").read_text())["code"]["source"]
    monkeypatch.setattr(runs, "code_version", lambda: {"version": "0.1.0", "source": "other"})
    with pytest.raises(UsageError, match="made by other code"):
        Run(tmp_path / "r", resume=True).write_config({"a": 1})
    Run(tmp_path / "r", resume=True).write_config({"a": 1}, allow_code_change=True)
    written = json.loads((tmp_path / "r" / "config.json").read_text())
    assert written["resumed_with"] == [{"version": "0.1.0", "source": "other"}]
    assert written["code"]["source"] != "other"


def test_the_code_digest_ignores_what_only_reads_rows(tmp_path):
    """A summary fixed after a long study leaves its rows' digest as it was; a change that computes rows does not."""
    from orthoxfer.version import digest_of

    for name in ("report/study.py", "fit/loop.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    before = digest_of(tmp_path)
    (tmp_path / "report" / "study.py").write_text("x = 2\n")
    assert digest_of(tmp_path) == before
    (tmp_path / "fit" / "loop.py").write_text("x = 2\n")
    assert digest_of(tmp_path) != before


def test_tune_and_auto_need_per_task_mode():
    with pytest.raises(UsageError, match="per-task"):
        BenchConfig(mode="joint", auto=True)
    with pytest.raises(UsageError, match="unknown start"):
        BenchConfig(mode="per-task", tune_from=("nothing",))


def test_task_selection_reads_no_test_data(micro):
    """The study's tasks are ranked on validation: a test loader that raises is never opened."""
    from orthoxfer.experiments.headroom import rank_tasks
    from orthoxfer.fit.finetune import FinetuneSettings
    from orthoxfer.suites import build_suite, default_tables
    from orthoxfer.suites.base import SuiteRequest

    root, config = micro

    def forbidden():
        raise AssertionError("task selection read test data")

    inputs = {}
    for pair in ("same", "data"):
        request = SuiteRequest(
            seed=0,
            shots=24,
            size="micro",
            pair=pair,
            tasks=("mnist", "coins"),
            kinds=("embed",),
            source_ft=FinetuneSettings(**default_tables("mini", "micro")["finetune"]),
            cache_dir=root / "cache",
        )
        inputs[pair] = build_suite("mini", request)
        for task in inputs[pair].tasks:
            task.test = (task.test[0], forbidden)
    ranking = rank_tasks(inputs["same"], inputs["data"], config, Run(root / "rank"), seed=7)
    assert sorted(ranking["order"]) == ["coins", "mnist"] and ranking["seed"] == 7
    first, second = ranking["order"]
    assert ranking["headroom"][first] >= ranking["headroom"][second]
