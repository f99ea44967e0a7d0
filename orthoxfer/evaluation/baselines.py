"""The baselines every transfer is compared against, each one call, and lambda chosen on held-out data.

- :func:`target_only`: the target's zero-shot accuracy;
- :func:`direct_addition` ("w/o alignment"): the summed source task vectors added to
  the target at the lambda with the best accuracy on a validation part of the
  few-shot pools, never on test. Transferred vectors are scored through the same
  call, so every row of a table picks its lambda the same way;
- :func:`fewshot_finetune` ("Target w/ FT"): the target's sites fine-tuned on exactly
  the aligners' few-shot images (same pools, same seed, same batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from orthoxfer.evaluation.accuracy import evaluate, pool_accuracy
from orthoxfer.fit.finetune import FinetuneSettings, finetune
from orthoxfer.fit.select import SCALE_LIMIT, choose_scale
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.vectors.taskvector import TaskVector

SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
TestSets = Mapping[str, tuple[nn.Module, Iterable]]  # name -> (target head, batches of (images, labels))


@dataclass
class Scaled:
    """A target carrying a vector at the lambda chosen on validation data, with every lambda's score."""

    model: nn.Module
    scale: float
    validation: dict[float, float]


def target_only(target: nn.Module, tests: TestSets, device: str | torch.device = "cpu") -> dict[str, float]:
    """Test accuracy of the target as it is, per task and ``mean``."""
    return evaluate(target, tests, device)


def direct_addition(
    target: nn.Module,
    vector: TaskVector,
    validation: Mapping[str, FewShotTask],
    scales: Sequence[float] = SCALES,
    device: str | torch.device = "cpu",
    limit: float = SCALE_LIMIT,
) -> Scaled:
    """A copy of the target carrying ``vector`` at the lambda with the best mean accuracy on ``validation``
    (never test data), by :func:`~orthoxfer.fit.select.choose_scale`: ties to the smaller lambda, the grid grown up
    to ``limit`` where its largest lambda wins (every lambda tried is in ``validation``)."""

    def score(s: float) -> float:
        return pool_accuracy(vector.added_to_copy(target, s), validation, device)["mean"]

    best, scores = choose_scale(score, scales, limit)
    return Scaled(vector.added_to_copy(target, best), best, scores)


def fewshot_finetune(
    target: nn.Module,
    train: dict[str, FewShotTask],
    settings: FinetuneSettings,
    run=None,
    validation: dict[str, FewShotTask] | None = None,
    validation_scales: tuple[float, ...] = (),
) -> tuple[nn.Module, TaskVector]:
    """A copy of the target with its sites fine-tuned on the aligners' few-shot pools, and the update itself
    (``validation_scales``: see :func:`~orthoxfer.fit.finetune.finetune`)."""
    vector = finetune(target, train, settings, run, "fewshot-ft", validation, validation_scales)
    return vector.added_to_copy(target), vector
