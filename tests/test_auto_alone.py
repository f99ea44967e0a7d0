"""``--method auto`` for ``transfer`` and ``align``: the best candidate on validation, within a budget, never test."""

import json
import math

import pytest
import torch
from planted import planted
from typer.testing import CliRunner

import orthoxfer.evaluation.baselines as baselines_module
import orthoxfer.experiments.auto_align as auto_align_module
import orthoxfer.fit.finetune as finetune_module
import orthoxfer.suites.mini as mini_module
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.experiments.auto_align import auto_align
from orthoxfer.experiments.auto_alone import AutoInputs, Candidate, Fitted, run_auto
from orthoxfer.experiments.auto_transfer import auto_transfer
from orthoxfer.experiments.halving import successive_halving
from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.runs import Run
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.transfers.registry import transfer_settings
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


def test_successive_halving_gives_the_better_half_more_steps_within_the_budget():
    quality = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.5, "e": 0.2}
    runs = []

    def fit(name, steps):
        runs.append((name, steps))
        return quality[name] * (1 + steps / 1000)

    found = successive_halving(list(quality), 300, fit, lambda score: score)
    assert sum(steps for _, steps in runs) <= 300 and list(found) == list(quality)
    assert [n for n, s in runs if s == 20] == ["a", "b", "c", "d", "e"]  # 3 rounds of 100 steps: 5 x 20
    assert [n for n, s in runs if s == 33] == ["b", "c", "d"]  # ties (c, d) keep their order
    assert [n for n, s in runs if s == 50] == ["b", "c"]
    assert found["b"][0] == 50 and found["a"][0] == 20


def the_source_itself():
    """Target = source (U* = I): the vector as it is scores 100% on validation, the perfect transfer."""
    source, target, _, tv, task = planted(near_identity=0.0)
    train, val = task.split(0.25, 0)
    return source, target, tv, train, val


def inputs_for(tmp_path, target, tv, train, val, source=None):
    carrying = transfer_settings({}, seed=0)
    return AutoInputs(target, source, {"toy": tv}, {"toy": train}, {"toy": val}, carrying, Run(tmp_path / "run"))


@pytest.fixture
def validation_only(monkeypatch):
    """Every accuracy auto and few-shot FT measure is on a pool registered here, or the test fails: no test data."""
    allowed: list = []
    real = baselines_module.pool_accuracy

    def guarded(model, tasks, device="cpu"):
        assert all(any(t is a for a in allowed) for t in tasks.values()), "scored on data that is not validation"
        return real(model, tasks, device)

    monkeypatch.setattr(baselines_module, "pool_accuracy", guarded)
    monkeypatch.setattr(finetune_module, "pool_accuracy", guarded)
    return allowed


def test_auto_picks_the_best_on_validation_not_the_first_and_ties_go_to_the_earlier(tmp_path, validation_only):
    source, target, tv, train, val = the_source_itself()
    validation_only.append(val)

    def fixed(vector):
        return lambda task, steps: Fitted(vector, None)

    declared = [
        Candidate("nothing", False, fixed(tv * 0.0)),
        Candidate("vector", False, fixed(tv)),
        Candidate("vector-again", False, fixed(tv)),
        Candidate("needs-the-source", False, fixed(tv), needs_source=True),
    ]
    chosen, record = run_auto(declared, inputs_for(tmp_path, target, tv, train, val), budget=10)
    assert record["chosen"] == {"toy": "vector"} and chosen["toy"].score == 1.0 and chosen["toy"].scale == 1.0
    scores = {name: per_task["toy"]["validation_score"] for name, per_task in record["candidates"].items()}
    assert scores["vector"] == scores["vector-again"] == 1.0 and scores["nothing"] < 1.0
    assert record["left_out"] == {"needs-the-source": "needs --source"}


def test_auto_needs_validation_data_for_every_task(tmp_path):
    source, target, tv, train, val = the_source_itself()
    inputs = inputs_for(tmp_path, target, tv, train, val)
    inputs.val = {}
    with pytest.raises(UsageError, match="chooses on validation data and there is none for task 'toy'"):
        run_auto([Candidate("vector", False, lambda task, steps: Fitted(tv, None))], inputs, budget=10)


def test_auto_transfer_keeps_the_vector_on_the_source_itself(tmp_path, validation_only):
    source, target, tv, train, val = the_source_itself()
    validation_only.append(val)
    finetuning = FinetuneSettings(lr=3e-3, weight_decay=0.0, steps=10, warmup=0, batch_size=32, sites="linear")
    done, record = auto_transfer(inputs_for(tmp_path, target, tv, train, val), finetuning)
    assert record["chosen"] == {"toy": "direct"} and record["validation_score"] == {"toy": 1.0}
    assert record["order"] == list(record["candidates"]) == ["direct", "finetune", "direct-then-finetune"]
    assert set(record["left_out"]) == {"transfusion", "transfusion-then-finetune"}  # no source model given
    assert record["budget"] == 20  # two trained candidates, ten steps each by default
    assert all(torch.equal(done["toy"].vector.dense[s], record["scale"]["toy"] * tv.dense[s]) for s in tv.sites)


def test_auto_align_keeps_u_identity_on_the_source_itself(tmp_path, validation_only, monkeypatch):
    source, target, tv, train, val = the_source_itself()
    validation_only.append(val)
    trained_with = []
    real_align = auto_align_module.align

    def spy(problem, settings, run=None):
        trained_with.append((settings.anchor, settings.select_every))
        return real_align(problem, settings, run)

    monkeypatch.setattr(auto_align_module, "align", spy)
    settings = AlignSettings(
        method="penalty", sites="linear", steps=6, lr=0.3, batch_size=32, augment=1, warmup=0, anchor=0.5
    )
    alignment, started, record = auto_align(inputs_for(tmp_path, target, tv, train, val), settings, budget=12)
    # the kept start (U = U0, nothing trained), then the trained candidate at the settings' beta, its step chosen on validation
    assert set(trained_with) == {(math.inf, 0), (0.5, 10)} and record["anchored"] == {
        "anchor": 0.5,
        "select_every": 10,
    }
    assert record["chosen"] == {"toy": "identity"} and record["validation_score"]["toy"] == 1.0
    assert record["order"] == ["identity", "penalty-from-identity"]  # the rest need the source model
    assert record["candidates"]["penalty-from-identity"]["toy"]["steps"] == 12
    assert all(torch.equal(u, torch.eye(8)) for u in alignment.matrices("toy").values()) and started["toy"] is tv
    alignment.save(tmp_path / "alignment.safetensors")
    saved = Alignment.load(tmp_path / "alignment.safetensors")
    assert saved.meta["strategy"] == "auto" and saved.meta["auto"]["chosen"] == {"toy": "identity"}
    assert saved.meta["diagnostics"]["toy"]["dist_identity_mean"] == 0


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    return root, ["--suite", "mini", "--size", "micro", "--cache-dir", str(root / "cache"), "--device", "cpu"]


@pytest.fixture
def no_test_data(monkeypatch):
    """The mini suite's test splits raise when read."""

    def refuse(*args, **kwargs):
        raise AssertionError("--method auto read test data")

    monkeypatch.setattr(mini_module, "mini_test", refuse)
    monkeypatch.setattr(mini_module.MiniSuite, "test_data", refuse)
    monkeypatch.setattr(mini_module.MiniSuite, "test_sets", refuse)


def best_in_order(record, task):
    """The candidate a choice on validation must make: the best score, ties to the earlier."""
    scores = {name: record["candidates"][name][task]["validation_score"] for name in record["order"]}
    return max(scores, key=scores.get)


def test_transfer_auto_from_the_cli_records_every_candidate_and_reads_no_test_data(mini, no_test_data):
    root, flags = mini
    args = ["transfer", *flags, "--method", "auto", "--source", "mini:a", "--target", "mini:a"]
    result = runner.invoke(app, [*args, "--task-vector", "mini:surfaces", "--out", str(root / "transfer")])
    assert result.exit_code == 0, result.output
    saved = TaskVector.load(root / "transfer" / "transferred.safetensors")
    record = saved.meta["auto"]
    assert saved.meta["method"] == "auto" and saved.meta["recommended_scale"] == 1.0
    assert record["order"] == [
        "direct",
        "transfusion",
        "finetune",
        "direct-then-finetune",
        "transfusion-then-finetune",
    ]
    assert record["chosen"]["surfaces"] == best_in_order(record, "surfaces") and record["left_out"] == {}
    assert record["budget"] == 12  # micro few-shot FT: 4 steps, three trained candidates
    assert "auto: validation accuracy" in result.output and "direct-then-finetune" in result.output


def test_align_auto_from_the_cli_writes_each_task_its_chosen_alignment(mini, no_test_data):
    root, flags = mini
    config = root / "anchored.toml"
    config.write_text("[align]\nanchor = 0.5\n")  # the config's beta reaches the trained candidates
    args = ["align", *flags, "--method", "auto", "--source", "mini:a", "--target", "mini:b", "--budget", "6"]
    args += ["--config", str(config)]
    vectors = ["--task-vector", "mini:surfaces", "--task-vector", "mini:relief"]
    result = runner.invoke(app, [*args, *vectors, "--out", str(root / "align")])
    assert result.exit_code == 0, result.output
    alignment = Alignment.load(root / "align" / "alignment.safetensors")
    record = alignment.meta["auto"]
    assert alignment.scopes == ["surfaces", "relief"] and record["budget"] == 6
    assert record["anchored"] == {"anchor": 0.5, "select_every": 10}
    for task in ("surfaces", "relief"):
        assert record["chosen"][task] == best_in_order(record, task)
        assert alignment.meta["per_task"][task]["start"]["init"] in ("identity", "transfusion", "procrustes")
    transferred = TaskVector.load(root / "align" / "transferred.safetensors")
    assert transferred.meta["auto"] == record and transferred.meta["recommended_scale"] == 1.0
    assert json.loads((root / "align" / "config.json").read_text())["method"] == "auto"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["transfer", "--method", "auto", "--mode", "joint"], "--method auto chooses per task"),
        (["transfer", "--method", "transfusion", "--budget", "5"], "--budget is --method auto's"),
        (["align", "--method", "auto", "--init", "procrustes"], "--method auto tries every start per task itself"),
        (["align", "--method", "penalty", "--budget", "5"], "--budget is --method auto's"),
    ],
)
def test_bad_auto_input_is_one_line(mini, extra, message):
    root, flags = mini
    common = ["--source", "mini:a", "--target", "mini:b", "--task-vector", "mini:surfaces"]
    result = runner.invoke(app, [*extra, *flags, *common, "--out", str(root / "bad")])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("command", ["transfer", "align"])
def test_auto_without_validation_data_is_one_line(eurosat_run, command):
    """The paper suite has no validation sets of its own, and a pool of one image leaves nothing to hold out."""
    tmp_path, flags, _ = eurosat_run
    vector = ["--task-vector", str(tmp_path / "tv.safetensors")]
    result = runner.invoke(
        app, [command, "--method", "auto", *flags, *vector, "--shots", "1", "--out", str(tmp_path / command)]
    )
    assert result.exit_code == 2, result.output
    assert "--method auto chooses on validation data and the suite has none of its own" in result.output
    assert len(result.output.strip().splitlines()) == 1
