"""The step chosen on validation: a planted best step is picked, ties go to the start, resume chooses alike."""

import copy
import dataclasses
import json

import pytest
import torch
from planted import planted
from test_resume import Interrupting
from test_train import colour_task
from typer.testing import CliRunner

import orthoxfer.evaluation.accuracy as accuracy
import orthoxfer.fit.finetune as finetune_module
from orthoxfer.alignment.align import align
from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.fit.finetune import FinetuneSettings, finetune
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import Run
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.vectors.taskvector import TaskVector


def settings(method="penalty", **kw):
    base = dict(method=method, sites="linear", steps=40, lr=5e-2, batch_size=16, augment=1, warmup=0, log_every=0)
    return AlignSettings(**{**base, "select_every": 10, **kw})


class Planted:
    """A stand-in for pool_accuracy: the n-th call scores ``curve[n]``; keeps what each call scored."""

    def __init__(self, curve=None, score=None):
        self.curve, self.score, self.seen = curve, score, []

    def __call__(self, model, tasks, device="cpu"):
        weights = {k: v.detach().clone() for k, v in model.overrides.items()}
        self.seen.append(weights)
        value = self.curve[len(self.seen) - 1] if self.curve is not None else self.score(weights)
        return {**dict.fromkeys(tasks, value), "mean": value}


def carried(alignment, tv, target):
    """``W + U^T dW U`` of every site, as the step's overrides name them."""
    moved = alignment.apply(tv)
    return {f"model.{s}": target.get_parameter(s) + moved.delta(s) for s in tv.sites}


@pytest.mark.parametrize("method", ["penalty", "riemannian", "cayley"])
def test_the_planted_best_step_is_chosen_and_its_u_returned(method, monkeypatch):
    source, target, _, tv, task = planted(near_identity=0.3)
    stub = Planted([0.1, 0.3, 0.9, 0.5, 0.2])  # steps 0, 10, 20, 30, 40
    monkeypatch.setattr(accuracy, "pool_accuracy", stub)
    problem = AlignProblem(target, {"toy": tv}, {"toy": task}, source, validation={"toy": task})
    al = align(problem, settings(method))
    chosen = al.meta["selection"]["joint"]
    assert chosen["chosen_step"] == 20 and chosen["chosen_score"] == 0.9
    assert [step for step, _, _ in chosen["curve"]] == [0, 10, 20, 30, 40] and al.meta["steps"] == 40
    assert {scale for _, _, scale in chosen["curve"]} == {1.0} and chosen["chosen_scale"] == 1.0
    weights = carried(al, tv, target)
    for key, w in weights.items():
        assert torch.allclose(w, stub.seen[2][key], atol=1e-6)
        assert not torch.allclose(w, stub.seen[4][key], atol=1e-4)  # the last step's U's were not returned


def test_ties_go_to_the_start_so_a_perfect_start_survives_training():
    """Target = source (U* = I): U = I scores 100% on validation, training cannot beat it, and I comes back exactly."""
    source, target, _, tv, task = planted(near_identity=0.0)
    train, val = task.split(0.25, 0)
    problem = AlignProblem(target, {"toy": tv}, {"toy": train}, source, validation={"toy": val})
    al = align(problem, settings("penalty", steps=20, select_every=5, lr=0.3))
    assert al.meta["selection"]["joint"]["chosen_step"] == 0
    assert al.meta["selection"]["joint"]["curve"][0] == [0, 1.0, 1.0]
    assert all(torch.equal(u, torch.eye(8)) for u in al.matrices().values())
    moved = align(problem, settings("penalty", steps=20, select_every=0, lr=0.3))
    assert "selection" not in moved.meta and any(not torch.equal(u, torch.eye(8)) for u in moved.matrices().values())


def test_per_task_scopes_choose_on_their_own_validation(monkeypatch):
    source, target, _, tv, task = planted(near_identity=0.3)
    other = dataclasses.replace(task, name="other")
    seen = []

    def score(model, tasks, device="cpu"):
        seen.append(list(tasks))
        return {**dict.fromkeys(tasks, 0.5), "mean": 0.5}

    monkeypatch.setattr(accuracy, "pool_accuracy", score)
    problem = AlignProblem(
        target, {"toy": tv, "other": tv}, {"toy": task, "other": other}, source, {"toy": task, "other": other}
    )
    al = align(problem, settings(steps=10, select_every=5, mode="per-task"))
    assert seen == [["toy"]] * 3 + [["other"]] * 3
    assert {s: r["chosen_step"] for s, r in al.meta["selection"].items()} == {"toy": 0, "other": 0}
    seen.clear()  # each task's scope scores its steps at every lambda given
    align(
        dataclasses.replace(problem, validation_scales=(1.0, 4.0)), settings(steps=10, select_every=5, mode="per-task")
    )
    assert seen == [["toy"]] * 6 + [["other"]] * 6


def test_resume_chooses_as_an_uninterrupted_run(monkeypatch, tmp_path):
    """The best state lives in the checkpoint: a run cut after its best step still returns that step's U's."""
    source, target, _, tv, task = planted(near_identity=0.3)
    run_settings = settings("cayley", steps=30, select_every=5, checkpoint_every=10)
    recorder = Planted([0.0] * 7)
    monkeypatch.setattr(accuracy, "pool_accuracy", recorder)
    align(AlignProblem(target, {"toy": tv}, {"toy": task}, source, validation={"toy": task}), run_settings)
    reference = recorder.seen[2]  # step 10

    def closeness(weights):
        return -sum((weights[k] - reference[k]).norm().item() for k in reference)

    monkeypatch.setattr(accuracy, "pool_accuracy", Planted(score=closeness))
    whole = align(
        AlignProblem(target, {"toy": tv}, {"toy": task}, source, validation={"toy": task}),
        run_settings,
        Run(tmp_path / "whole"),
    )
    broken = Interrupting(**{f.name: getattr(task, f.name) for f in dataclasses.fields(FewShotTask)}, fail_at=25)
    with pytest.raises(KeyboardInterrupt):
        align(
            AlignProblem(target, {"toy": tv}, {"toy": broken}, source, validation={"toy": task}),
            run_settings,
            Run(tmp_path / "cut"),
        )
    resumed = align(
        AlignProblem(target, {"toy": tv}, {"toy": task}, source, validation={"toy": task}),
        run_settings,
        Run(tmp_path / "cut", resume=True),
    )
    assert whole.meta["selection"]["joint"]["chosen_step"] == 10
    assert resumed.meta["selection"] == whole.meta["selection"]
    assert all(torch.equal(resumed.matrices()[s], whole.matrices()[s]) for s in tv.sites)


# steps 0, 10, 20, 30, 40, each scored at lambda 1 then 4 (the grid's limit, so it does not grow): step 10 is the best
# at the training scale, step 30 at its own best lambda
AT_TWO_SCALES = [0.1, 0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.95, 0.2, 0.3]


@pytest.mark.parametrize("trained_at", [1.0, 0.5])
def test_a_step_is_chosen_at_its_best_lambda_when_lambda_is_chosen_after(trained_at, monkeypatch):
    """Scored at the training scale only, step 10 would win; at lambda 4, step 30 does, and that U comes back; each
    lambda is the lambda itself, whatever scale the U's were trained at."""
    source, target, _, tv, task = planted(near_identity=0.3)
    stub = Planted(AT_TWO_SCALES)
    monkeypatch.setattr(accuracy, "pool_accuracy", stub)
    problem = AlignProblem(target, {"toy": tv}, {"toy": task}, source, {"toy": task}, validation_scales=(1.0, 4.0))
    al = align(problem, settings("penalty", scale=trained_at))
    chosen = al.meta["selection"]["joint"]
    assert chosen["chosen_step"] == 30 and chosen["chosen_score"] == 0.95 and chosen["chosen_scale"] == 4.0
    assert [score for _, score, _ in chosen["curve"]] == [0.1, 0.9, 0.4, 0.95, 0.3]
    assert [scale for _, _, scale in chosen["curve"]] == [1.0, 1.0, 4.0, 4.0, 4.0]
    for at_one, at_four in zip(stub.seen[::2], stub.seen[1::2]):  # each step carried at lambda 1, then at 4
        for key, w in at_one.items():
            site = target.get_parameter(key.removeprefix("model."))
            assert torch.allclose(at_four[key] - site, 4 * (w - site), atol=1e-5)
    for key, w in carried(al, tv, target).items():  # W + 1 * U^T dW U at step 30's U's: what was scored at lambda 1
        assert torch.allclose(w, stub.seen[6][key], atol=1e-6)
    stub = Planted([0.1, 0.9, 0.3, 0.5, 0.2])  # without the grid: one score per step, at the training scale
    monkeypatch.setattr(accuracy, "pool_accuracy", stub)
    plain = align(AlignProblem(target, {"toy": tv}, {"toy": task}, source, {"toy": task}), settings("penalty"))
    assert plain.meta["selection"]["joint"]["chosen_step"] == 10 and len(stub.seen) == 5
    with pytest.raises(UsageError, match="training scale other than 0"):
        align(problem, settings("penalty", scale=0.0))


def test_a_validator_takes_the_best_mean_and_the_smaller_lambda_on_ties():
    from orthoxfer.fit.select import Validator

    scores = {0.25: float("nan"), 0.5: 0.4, 1.0: 0.7, 1.5: 0.7}
    best = Validator(lambda: lambda s: {"t": scores[s], "mean": scores[s], "lambda": s}, (0.25, 0.5, 1.0, 1.5))()
    assert best.scale == 1.0 and best.scores["lambda"] == 1.0  # a tie goes to the smaller lambda; NaN loses
    grows = {0.5: 0.1, 1.0: 0.2, 1.5: 0.3, 2.25: 0.4, 3.375: 0.2}  # the top of the grid wins: the grid grows x1.5
    assert Validator(lambda: lambda s: {"mean": grows[s], "lambda": s}, (1.5, 0.5, 1.0))().scale == 2.25
    assert Validator(lambda: lambda s: {}, (1.5, 0.5, 1.0, 0.5)).grid() == [0.5, 1.0, 1.5]  # order does not matter
    with pytest.raises(UsageError, match="at least one lambda"):
        Validator(lambda: lambda s: {}, ())


def test_resume_at_a_grid_keeps_the_chosen_lambda_and_refuses_other_selections(monkeypatch, tmp_path):
    """The best step (10, at lambda 4) comes before the cut: the resumed run returns it with its lambda. A curve
    scored at another grid or interval, or by a version that recorded no lambdas, would mix two kinds of score."""
    source, target, _, tv, task = planted(near_identity=0.3)
    run_settings = settings("penalty", steps=30, select_every=5, checkpoint_every=10)
    at_four = iter([0.1, 0.2, 0.1, 0.3, 0.2, 0.9] + [0.1] * 40)  # steps 0, 5, 10 at lambda 1 then 4: 10 wins at 4

    def problem(tasks, scales=(1.0, 4.0)):
        return AlignProblem(target, {"toy": tv}, tasks, source, {"toy": task}, validation_scales=scales)

    monkeypatch.setattr(accuracy, "pool_accuracy", Planted(score=lambda weights: next(at_four)))
    broken = Interrupting(**{f.name: getattr(task, f.name) for f in dataclasses.fields(FewShotTask)}, fail_at=25)
    with pytest.raises(KeyboardInterrupt):
        align(problem({"toy": broken}), run_settings, Run(tmp_path))
    for changed, why in (
        (dict(tasks={"toy": task}, scales=(1.0, 2.0)), "another step selection"),
        (dict(tasks={"toy": task}, scales=()), "another step selection"),
    ):
        with pytest.raises(UsageError, match=why):
            align(problem(**changed), run_settings, Run(tmp_path, resume=True))
    with pytest.raises(UsageError, match="another step selection"):
        align(problem({"toy": task}), settings("penalty", steps=30, select_every=10), Run(tmp_path, resume=True))
    resumed = align(problem({"toy": task}, (4.0, 1.0)), run_settings, Run(tmp_path, resume=True))  # the same grid
    chosen = resumed.meta["selection"]["joint"]
    assert (chosen["chosen_step"], chosen["chosen_score"], chosen["chosen_scale"]) == (10, 0.9, 4.0)
    lines = [json.loads(line) for line in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [(line["step"], line["scale"]) for line in lines[:3]] == [(0, 4.0), (5, 4.0), (10, 4.0)]


def test_a_checkpoint_without_lambdas_is_refused_with_what_to_do():
    from orthoxfer.fit.select import StepSelection

    old = {"selection": {"every": 5, "chosen_step": 0, "chosen_score": 0.5, "curve": [[0, 0.5]]}}
    with pytest.raises(UsageError, match="did not record each score's lambda; start this run afresh"):
        StepSelection(5, [1.0]).restore({}, old)


def test_selection_needs_validation_data():
    source, target, _, tv, task = planted()
    with pytest.raises(UsageError, match="--select-every needs validation data for every task; none for 'toy'"):
        align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings())
    with pytest.raises(UsageError, match="not among the tasks"):
        align(AlignProblem(target, {"toy": tv}, {"toy": task}, source, validation={"toy": task, "x": task}), settings())
    with pytest.raises(UsageError, match="--select-every needs validation data"):
        finetune(torch.nn.Linear(2, 2), {"toy": task}, FinetuneSettings(select_every=5))


def ft_settings(**kw):
    base = dict(kind="embed", lr=3e-3, weight_decay=0.0, steps=20, warmup=2, batch_size=32, log_every=0)
    return FinetuneSettings(**{**base, "select_every": 5, **kw})


class PlantedModels:
    """pool_accuracy for fine-tuning: scores the n-th call ``curve[n]``, keeps each scored model's state."""

    def __init__(self, curve):
        self.curve, self.seen = curve, []

    def __call__(self, model, tasks, device="cpu"):
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        value = self.curve[len(self.seen) - 1]
        return {**dict.fromkeys(tasks, value), "mean": value}


def test_finetuning_returns_the_update_of_the_planted_best_step(tiny, monkeypatch):
    task = colour_task()
    stub = PlantedModels([0.2, 0.4, 0.8, 0.8, 0.3])  # steps 0, 5, 10, 15, 20; the tie goes to step 10
    monkeypatch.setattr(finetune_module, "pool_accuracy", stub)
    tv = finetune(copy.deepcopy(tiny), {"colour": task}, ft_settings(), validation={"colour": task})
    assert tv.meta["selection"]["chosen_step"] == 10 and [s for s, _, _ in tv.meta["selection"]["curve"]] == [
        0,
        5,
        10,
        15,
        20,
    ]
    tuned = tv.apply_to(copy.deepcopy(tiny)).state_dict()
    assert all(torch.allclose(tuned[k], stub.seen[2][k], atol=1e-6) for k in tuned)
    assert any(not torch.allclose(tuned[k], stub.seen[4][k], atol=1e-5) for k in tuned)


def test_finetuning_keeps_the_start_when_training_only_hurts(tiny, monkeypatch):
    monkeypatch.setattr(finetune_module, "pool_accuracy", PlantedModels([0.5, 0.4, 0.3, 0.2, 0.1]))
    task = colour_task()
    tv = finetune(copy.deepcopy(tiny), {"colour": task}, ft_settings(), validation={"colour": task})
    assert tv.meta["selection"]["chosen_step"] == 0
    assert all(tv.delta(s).abs().max() == 0 for s in tv.sites)  # the zero update: the target itself


def test_finetuning_chooses_its_step_at_the_best_lambda_of_the_grid(tiny, monkeypatch):
    task = colour_task()
    curve = [0.2, 0.2, 0.8, 0.3, 0.4, 0.5, 0.6, 0.9, 0.1, 0.1]  # steps 0-20 by 5, at lambda 1 then 4: step 15 wins
    stub = PlantedModels(curve)
    monkeypatch.setattr(finetune_module, "pool_accuracy", stub)
    snapshots = []
    task_vector = finetune_module.SiteUpdates.task_vector
    monkeypatch.setattr(
        finetune_module.SiteUpdates, "task_vector", lambda self, meta: snapshots.append(1) or task_vector(self, meta)
    )
    tv = finetune(
        copy.deepcopy(tiny), {"colour": task}, ft_settings(), validation={"colour": task}, validation_scales=(1.0, 4.0)
    )
    assert tv.meta["selection"]["chosen_step"] == 15 and tv.meta["selection"]["chosen_score"] == 0.9
    assert tv.meta["selection"]["chosen_scale"] == 4.0
    assert len(snapshots) == 6  # one update per scoring (steps 0-20 by 5), not per lambda, and the one returned
    start = tiny.state_dict()
    for at_one, at_four in zip(stub.seen[2::2], stub.seen[3::2]):  # the update carried at lambda 1, then 4
        assert all(torch.allclose(at_four[k] - start[k], 4 * (at_one[k] - start[k]), atol=1e-5) for k in start)
    tuned = tv.apply_to(copy.deepcopy(tiny)).state_dict()
    assert all(torch.allclose(tuned[k], stub.seen[6][k], atol=1e-6) for k in tuned)  # step 15's update, at 1


def test_fewshot_ft_baseline_chooses_its_step_on_the_held_out_part(eurosat_run):
    tmp_path, common, _ = eurosat_run
    loop = ["--shots", "10", "--batch-size", "4", "--augment", "1", "--steps", "3", "--lr", "1e-3"]
    args = ["baseline", "fewshot-ft", *common, "--tasks", "eurosat", *loop, "--select-every", "2"]
    result = CliRunner().invoke(app, [*args, "--val-fraction", "0.3", "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    selection = json.loads((tmp_path / "f" / "results.json").read_text())["selection"]
    assert [step for step, _, _ in selection["curve"]] == [0, 2, 3] and selection["chosen_step"] in (0, 2, 3)
    assert TaskVector.load(tmp_path / "f" / "task_vector.safetensors").meta["selection"] == selection
    alone = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "g")])
    assert alone.exit_code == 2 and "--select-every needs validation data" in alone.output
