"""``--method auto`` alone (``transfer``, ``align``): per task, declared candidates run in a budget, the best kept.

No method is best on every pair of models (the study: the vector as it is on the
source itself, transfusion on a new release, few-shot learning where nothing carries),
and a user cannot tell beforehand which pair they have. So auto tries a declared list
of candidates per task, each yielding the vector the target would carry, scores each
on the task's validation data at its own lambda (chosen there too), and keeps the
best; ties go to the earlier candidate, and candidates are listed cheapest first.
Candidates that take no optimiser steps are computed once; the trained ones share
``budget`` steps per task by successive halving (:mod:`orthoxfer.experiments.halving`).

Test data is never an input: only ``train`` (what candidates learn from) and ``val``
(what they are scored on) are. Each command declares its own candidates
(:mod:`~orthoxfer.experiments.auto_transfer`, :mod:`~orthoxfer.experiments.auto_align`):
those its output can hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.evaluation.baselines import SCALES, direct_addition
from orthoxfer.experiments.auto import best_per_task
from orthoxfer.experiments.halving import successive_halving
from orthoxfer.experiments.tune import B
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import Run
from orthoxfer.terminal import Grid
from orthoxfer.transfers.base import TransferSettings
from orthoxfer.vectors.taskvector import TaskVector

K = TypeVar("K")
SELECT_EVERY = 10  # a trained candidate's step is chosen on validation, every this many steps (and the first, last)


@dataclass
class AutoInputs:
    """What every candidate may read: the models, each task's vector, its training pool and its validation set."""

    target: nn.Module
    source: nn.Module | None
    vectors: dict[str, TaskVector]
    train: dict[str, FewShotTask]
    val: dict[str, FewShotTask]
    carrying: TransferSettings  # a transfer method's options, seed and device
    run: Run  # trained candidates write their runs under <run>/candidates/<task>/<candidate>-<steps>
    scales: tuple[float, ...] = SCALES

    def folder(self, task: str, candidate: str, steps: int) -> Run:
        return Run(self.run.file(f"candidates/{task}/{candidate}-{steps}"), resume=True)


@dataclass
class Fitted(Generic[K]):
    """One candidate's result on one task: the vector the target carries (before lambda) and what the command keeps."""

    vector: TaskVector
    kept: K
    fields: dict[str, Any] = field(default_factory=dict)  # what to record (a chosen step, a start's lambda ...)


@dataclass(frozen=True)
class Candidate(Generic[K]):
    name: str
    trained: bool  # takes optimiser steps from the budget; else computed once
    fit: Callable[[str, int], Fitted[K]]  # (task, steps; 0 for an untrained candidate) -> its result
    needs_source: bool = False


@dataclass
class Scored(Generic[K]):
    fitted: Fitted[K]
    steps: int
    scale: float
    score: float  # validation accuracy at ``scale``


def scaled_score(inputs: AutoInputs, task: str, fitted: Fitted[K], steps: int) -> Scored[K]:
    """``fitted`` at the lambda best on the task's validation set (the grid grows where its edge wins)."""
    device = inputs.carrying.device
    chosen = direct_addition(inputs.target, fitted.vector, {task: inputs.val[task]}, inputs.scales, device)
    return Scored(fitted, steps, chosen.scale, chosen.validation[chosen.scale])


def budgeted(settings: B, steps: int) -> B:
    """``settings`` (few-shot FT's or an aligner's) run for ``steps``, warm-up shortened in proportion."""
    return settings.replace(steps=steps, warmup=settings.warmup * steps // max(1, settings.steps))


def default_budget(candidates: list[Candidate[K]], steps: int) -> int:
    """As many steps as running every trained candidate once for ``steps``: auto costs what trying each would."""
    return steps * sum(c.trained for c in candidates)


def usable(candidates: list[Candidate[K]], inputs: AutoInputs) -> list[Candidate[K]]:
    """The candidates these inputs can run (those that need the source model only where it is given)."""
    return [c for c in candidates if inputs.source is not None or not c.needs_source]


def run_auto(
    candidates: list[Candidate[K]], inputs: AutoInputs, budget: int
) -> tuple[dict[str, Scored[K]], dict[str, Any]]:
    """Per task the chosen candidate's result, and the record: every candidate's validation score, lambda and steps,
    the choice, the budget and the candidates left out (no source model)."""
    tasks = list(inputs.vectors)
    missing = [t for t in tasks if t not in inputs.val]
    if missing:
        raise UsageError(
            f"--method auto chooses on validation data and there is none for task {missing[0]!r}: "
            "give validation sets (or pools large enough to hold a part out)"
        )
    run = usable(candidates, inputs)
    by_name = {c.name: c for c in run}
    scored: dict[str, dict[str, Scored[K]]] = {}
    for task in tasks:

        def fit(name: str, steps: int, task: str = task) -> Scored[K]:
            return scaled_score(inputs, task, by_name[name].fit(task, steps), steps)

        found = {c.name: fit(c.name, 0) for c in run if not c.trained}
        trained = successive_halving([c.name for c in run if c.trained], budget, fit, lambda s: s.score)
        found.update({name: result for name, (_, result) in trained.items()})
        scored[task] = {c.name: found[c.name] for c in run}  # the declared order: ties go to the earlier
    choice = best_per_task({c.name: {t: scored[t][c.name].score for t in tasks} for c in run}, tasks)
    record = {
        "chosen": choice,
        "validation_score": {t: scored[t][choice[t]].score for t in tasks},
        "scale": {t: scored[t][choice[t]].scale for t in tasks},
        "budget": budget,
        "order": [c.name for c in run],  # the declared order, cheapest first: where ties go (JSON may sort the keys)
        "candidates": {
            c.name: {
                t: {"validation_score": s.score, "scale": s.scale, "steps": s.steps, **s.fitted.fields}
                for t, s in ((t, scored[t][c.name]) for t in tasks)
            }
            for c in run
        },
        "left_out": {c.name: "needs --source" for c in candidates if c not in run},
    }
    return {t: scored[t][choice[t]] for t in tasks}, record


def auto_table(record: dict[str, Any], title: str) -> Grid:
    """Every candidate's validation accuracy per task (lambda beside it), the chosen one marked with ``*``."""
    tasks = list(record["chosen"])
    table = Grid(title, ["candidate", *tasks])
    for name in record["order"]:
        per_task = record["candidates"][name]
        cells = [
            f"{100 * per_task[t]['validation_score']:.1f} (x{per_task[t]['scale']:g})"
            + (" *" if record["chosen"][t] == name else "")
            for t in tasks
        ]
        table.add_row(name, *cells)
    return table
