"""The rows that learn from the few-shot pools with the target's own weights: few-shot FT and transfer-then-tune.

Both give every task its share of the budget in ``per-task`` mode (each task fine-tuned
alone on its pool, as each task gets its own U's in the aligners' rows) and keep the
step chosen on validation where the settings ask for it. Few-shot FT's update then
gets the lambda every other row gets (chosen on validation, 0 included): a baseline
gets what its rows get.

Transfer-then-tune starts few-shot FT from ``target + lambda * carried`` (lambda chosen
on validation first), where ``carried`` is the vector as it is (``direct``) or carried
by a transfer method: what a practitioner would try first, and the baseline any
anchored aligner must beat. At lambda = 0 it is few-shot FT.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from torch import nn

from orthoxfer.evaluation.baselines import direct_addition, fewshot_finetune
from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import Run
from orthoxfer.vectors.taskvector import TaskVector

Pools = dict[str, FewShotTask]


B = TypeVar("B", bound="Budget")


class Budget(Protocol):
    """Settings with a step budget: few-shot FT's and the aligners' alike."""

    steps: int
    warmup: int

    def replace(self: B, **changes: Any) -> B: ...


def task_share(settings: B, tasks: int) -> B:
    """One task's share of a joint budget (few-shot FT's or an aligner's): steps and warm-up divided by the number of
    tasks, steps rounded up."""
    return settings.replace(steps=max(1, -(-settings.steps // tasks)), warmup=settings.warmup // tasks)


def finetune_updates(
    start: nn.Module | dict[str, nn.Module],
    train: Pools,
    val: Pools,
    settings: FinetuneSettings,
    run: Run,
    per_task: bool,
    scales: tuple[float, ...] = (),
) -> dict[str, TaskVector]:
    """Few-shot FT updates from ``start`` (one model, or one per task): one per task (``per_task``, each on its pool
    alone with its share of the budget, in a run folder of its own) or ``joint`` (every pool, the whole budget).
    ``scales``: the lambdas each scored step is tried at, where the update gets one chosen on that grid later."""
    if not per_task:
        model = start if isinstance(start, nn.Module) else start["joint"]
        return {
            "joint": fewshot_finetune(model, train, settings, run, validation=val or None, validation_scales=scales)[1]
        }
    share = task_share(settings, len(train))
    updates = {}
    for t in train:
        model = start if isinstance(start, nn.Module) else start[t]
        folder = Run(run.file(f"task-{t}"), resume=True)
        updates[t] = fewshot_finetune(
            model, {t: train[t]}, share, folder, validation={t: val[t]}, validation_scales=scales
        )[1]
    return updates


def chosen_step(meta: dict[str, Any]) -> dict[str, Any]:
    """A few-shot update's step chosen on validation, where it was chosen (step 0: training only spoiled the start)."""
    return {"chosen_step": meta["selection"]["chosen_step"]} if "selection" in meta else {}


def chosen_steps(updates: dict[str, TaskVector]) -> dict[str, Any]:
    """:func:`chosen_step` per task, as a row records it."""
    steps = {t: found["chosen_step"] for t, u in updates.items() if (found := chosen_step(u.meta))}
    return {"chosen_step": steps} if steps else {}


def transfer_then_tune(
    target: nn.Module,
    carried: dict[str, TaskVector],
    train: Pools,
    val: Pools,
    settings: FinetuneSettings,
    scales: tuple[float, ...],
    run: Run,
) -> tuple[dict[str, nn.Module], dict[str, Any], dict[str, TaskVector]]:
    """Per task: the carried vector at the lambda chosen on validation, then few-shot FT from there.

    Returns each task's model, what to record (the start's lambda and validation scores)
    and each task's few-shot update (what the model carries beyond ``lambda * carried``).
    """
    device = settings.device
    chosen = {t: direct_addition(target, carried[t], {t: val[t]}, scales, device) for t in train}
    updates = finetune_updates({t: c.model for t, c in chosen.items()}, train, val, settings, run, per_task=True)
    models = {t: updates[t].added_to_copy(chosen[t].model) for t in train}
    fields = {
        "scale": {t: c.scale for t, c in chosen.items()},
        "start_validation": {t: {str(k): v for k, v in c.validation.items()} for t, c in chosen.items()},
    }
    return models, fields, updates
