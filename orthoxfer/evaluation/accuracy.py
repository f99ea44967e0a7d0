"""Top-1 accuracy per task and the unweighted mean over tasks, as the paper reports it.

Evaluation runs under ``torch.inference_mode`` with bf16 autocast on CUDA (float32
elsewhere) and keeps its counters on the device, so the loop never waits for the
host. Images the loader could not decode arrive with label ``CORRUPT``; they are
left out of the accuracy and counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from orthoxfer.data.paper import CORRUPT
from orthoxfer.models.modes import evaluating
from orthoxfer.problem.tasks import Pool, image_features, plain_batches
from orthoxfer.terminal import stage_progress


@dataclass
class Score:
    correct: int
    total: int  # images scored (unreadable ones excluded)
    skipped: int  # unreadable images

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def _score(
    model: nn.Module, head: nn.Module, loader: Iterable, device: torch.device, progress: Any, label: str
) -> Score:
    total_batches = len(loader) if isinstance(loader, Sized) else None
    bar = progress.add_task(label, total=total_batches)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = torch.zeros((), dtype=torch.int64, device=device)
    skipped = torch.zeros((), dtype=torch.int64, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), autocast:
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = torch.as_tensor(labels).to(device, non_blocking=True)
            readable = labels != CORRUPT
            predicted = head(image_features(model, images)).argmax(dim=-1)
            correct += ((predicted == labels) & readable).sum()
            total += readable.sum()
            skipped += (~readable).sum()
            progress.advance(bar)
    return Score(int(correct), int(total), int(skipped))


def evaluate_scores(
    model: nn.Module,
    tasks: Mapping[str, tuple[nn.Module, Iterable]],
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Score]:
    """Counts per task for ``tasks = {name: (head, loader)}``; the model and heads are left in the mode they came in.

    The model and heads move to ``device`` in place, as the training steps move them:
    models built or cached on the CPU are scored where the images go.
    """
    device = torch.device(device)
    with evaluating(model, *(head for head, _ in tasks.values()), device=device), stage_progress(progress) as bars:
        return {name: _score(model, head, loader, device, bars, name) for name, (head, loader) in tasks.items()}


def mean_accuracies(scores: Mapping[str, Score]) -> dict[str, float]:
    """``{task: accuracy, ..., "mean": unweighted mean over tasks}``."""
    accuracies = {name: score.accuracy for name, score in scores.items()}
    accuracies["mean"] = sum(accuracies.values()) / len(accuracies) if accuracies else float("nan")
    return accuracies


def evaluate(
    model: nn.Module,
    tasks: Mapping[str, tuple[nn.Module, Iterable]],
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Top-1 accuracy per task and their unweighted mean (key ``"mean"``)."""
    return mean_accuracies(evaluate_scores(model, tasks, device, progress))


def accuracy(model: nn.Module, head: nn.Module, loader: Iterable, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``head(features(model, images))`` over ``loader``'s (images, labels) batches."""
    return evaluate_scores(model, {"task": (head, loader)}, device, progress=False)["task"].accuracy


def pool_accuracy(model: nn.Module, tasks: Mapping[str, Pool], device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy on held-out parts of few-shot pools or train splits: the only data settings are chosen on."""
    return evaluate(model, {n: (t.head, plain_batches(t, 256)) for n, t in tasks.items()}, device, progress=False)
