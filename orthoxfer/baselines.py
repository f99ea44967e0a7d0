"""The baselines every transfer is compared against, and scale selection on held-out few-shot data.

- target only: the target's zero-shot accuracy;
- direct addition ("w/o alignment"): the summed source task vectors added to the target,
  lambda chosen on a validation part of the few-shot pool, never on test;
- target few-shot fine-tuning ("Target w/ FT"): the target's sites fine-tuned on
  exactly the aligners' few-shot images (:func:`orthoxfer.train.finetune`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from orthoxfer.evaluate import evaluate
from orthoxfer.problem import FewShotTask
from orthoxfer.taskvector import TaskVector

SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def pool_batches(task: FewShotTask, batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A pool as plain (unaugmented) evaluation batches."""
    return [task.batch(idx, augment=False) for idx in torch.arange(len(task.labels)).split(batch_size)]


def pool_accuracy(model: nn.Module, tasks: dict[str, FewShotTask], device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy on few-shot pools (validation parts): the only data settings are chosen on."""
    return evaluate(model, {n: (t.head, pool_batches(t)) for n, t in tasks.items()}, device, progress=False)


def with_vector(model: nn.Module, vector: TaskVector | None, scale: float) -> nn.Module:
    """A copy of ``model`` carrying ``scale * vector`` (the model itself is left alone)."""
    out = copy.deepcopy(model)
    return vector.apply_to(out, scale) if vector is not None and scale != 0 else out


def choose_scale(
    model: nn.Module,
    vector: TaskVector,
    validation: dict[str, FewShotTask],
    scales: Sequence[float] = SCALES,
    device: str | torch.device = "cpu",
) -> tuple[float, dict[float, float]]:
    """The lambda with the best mean validation accuracy (ties: the smaller lambda), and every score."""
    scores = {s: pool_accuracy(with_vector(model, vector, s), validation, device)["mean"] for s in scales}
    best = max(scores, key=lambda s: (scores[s], -s))
    return best, scores
