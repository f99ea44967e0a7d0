"""A mini task seen by one model: its stratified few-shot pool, the model's prototype head, validation, the augmentation.

Each task's training split is cut in three, the same for every seed and model:

- the **head set** (:data:`HEAD_PER_CLASS` labelled images per class) builds each
  model's frozen prototype head. It stands for the paper's zero-shot text heads: what
  a model knows of a task before any method runs. It never meets the few-shot pool,
  so "target only" does not already use the pool's labels;
- the **validation set** (:data:`VAL_PER_CLASS` per class) is where every method's
  lambda and learning rate are chosen: far more images than a fifth of a small pool
  (about 5, which chose lambda = 0 for a perfect transfer on half the tasks);
- the **rest**, from which each seed draws its few-shot pool.

The source's task vectors are fine-tuned on everything but the validation set
(:func:`source_training`): a lambda or step chosen there is chosen on images the vector
never saw, as a control's is. The pools overlap the vector's training data, as the
paper's few-shot images come from the split its source vectors were fine-tuned on. With
``disjoint`` they do not: a fixed part of the rest, :data:`POOL_RESERVE` times the shots
(:func:`pool_region`), is where every seed draws its pool, and the source vector is
fine-tuned without it, to measure what the overlap is worth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.data.bundled import DATA_VERSION
from orthoxfer.data.image_ops import stratified
from orthoxfer.data.mini import MiniTask
from orthoxfer.errors import UsageError
from orthoxfer.models.modes import evaluating
from orthoxfer.models.prototype_head import PrototypeHead
from orthoxfer.problem.tasks import FewShotTask, image_features, normalise


@dataclass
class MiniEval:
    """What a method needs for one task on one model: the few-shot pool (with head) and the test split."""

    fewshot: FewShotTask
    val: FewShotTask  # the task's validation set, with the same head
    test_images: torch.Tensor  # uint8; normalise with :func:`mini_normalise`
    test_labels: torch.Tensor


def random_shift(images: torch.Tensor, generator: torch.Generator | None = None, pad: int = 2) -> torch.Tensor:
    """Each image of a (N, C, H, W) batch moved by up to ``pad`` pixels (edge-replicated), in one gather."""
    n, c, h, w = images.shape
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, c, h, w + 2 * pad)
    picked = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, c, h, w)
    return torch.gather(picked, 3, cols)


def shift_augment(flip: bool, pad: int = 2) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mini few-shot augmentation: a random shift of up to ``pad`` pixels, and a flip where it keeps the label.

    The paper's crops, colour and blur changes are already part of how each task image
    was rendered; at 32 px a shift is the cheap per-batch view change that is left.
    It works on a whole uint8 batch at once (``batched``): per-image Python calls cost
    as much as the small model's training step.
    """

    return _ShiftAugment(flip, pad)


@dataclass(frozen=True)
class _ShiftAugment:
    flip: bool
    pad: int
    batched: ClassVar[bool] = True  # FewShotTask.batch hands it the whole batch

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = random_shift(images, pad=self.pad)
        if self.flip:
            mirror = torch.rand(len(out)) < 0.5
            out[mirror] = out[mirror].flip(-1)
        return out.round().to(torch.uint8)


HEAD_PER_CLASS = 2
VAL_PER_CLASS = 8


def reserved(task: MiniTask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices into the training split: head set, validation set, the rest (the pools' source).

    A class with few training images (the micro tasks) keeps at least half of them for
    the pools: each reserved part takes at most a quarter of the class, and at least one.
    """
    labels = task.train_labels.numpy()
    counts = np.bincount(labels, minlength=len(task.class_names))
    rng = np.random.default_rng([DATA_VERSION, 0x4EAD])  # fixed: every seed and model sees the same parts
    parts, left = [], np.arange(len(labels))
    for want in (HEAD_PER_CLASS, VAL_PER_CLASS):
        per_class = min(want, max(1, int(counts.min()) // 4))
        chosen = left[stratified(labels[left], per_class * len(counts), rng)]
        parts.append(np.sort(chosen))
        left = np.setdiff1d(left, chosen)
    return torch.from_numpy(parts[0]), torch.from_numpy(parts[1]), torch.from_numpy(left)


POOL_RESERVE = 2  # a disjoint pool region holds this many times the shots: seeds still draw different pools


def pool_region(task: MiniTask, shots: int | None, disjoint: bool = False) -> torch.Tensor:
    """Indices the pools are drawn from: the training split's rest (past head and validation sets), or with
    ``disjoint`` a fixed stratified part of it, ``POOL_RESERVE`` times ``shots``, that the source vector never
    trains on (:func:`source_training` with ``held_out``)."""
    rest = reserved(task)[2]
    if not disjoint:
        return rest
    if shots is None:
        raise UsageError("disjoint pools are a part of the training split set aside for the shots: give --shots")
    size = min(len(rest), POOL_RESERVE * shots)
    rng = np.random.default_rng([DATA_VERSION, 0x9001])  # fixed: every seed draws from the same region
    return rest[torch.from_numpy(np.sort(stratified(task.train_labels[rest].numpy(), size, rng)))]


def source_training(task: MiniTask, held_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels a source task vector is fine-tuned on: the training split less the validation set
    (and less ``held_out``, a disjoint pool region)."""
    keep = torch.ones(len(task.train_labels), dtype=torch.bool)
    keep[reserved(task)[1]] = False
    if held_out is not None:
        keep[held_out] = False
    return task.train_images[keep], task.train_labels[keep]


def fewshot_pool(
    task: MiniTask, shots: int | None, seed: int, disjoint: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``shots`` images of :func:`pool_region`, stratified over classes (``None``: all of it)."""
    return _draw(task, pool_region(task, shots, disjoint), shots, seed)


def _draw(task: MiniTask, rest: torch.Tensor, shots: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if shots is not None:
        if shots < len(task.class_names):
            raise UsageError(f"task {task.name}: {shots} shots cannot cover its {len(task.class_names)} classes")
        if shots > len(rest):
            raise UsageError(f"task {task.name}: {shots} shots exceed the {len(rest)} training images left for pools")
        rest = rest[
            torch.from_numpy(
                stratified(task.train_labels[rest].numpy(), shots, np.random.default_rng([seed, DATA_VERSION]))
            )
        ]
    return task.train_images[rest], task.train_labels[rest]


def task_head(model: nn.Module, task: MiniTask) -> PrototypeHead:
    """The model's frozen prototype head for ``task``, from the task's head set (the same whatever the pool)."""
    return _head(model, task, reserved(task)[0])


def validation_set(model: nn.Module, task: MiniTask) -> FewShotTask:
    """The task's fixed validation set with the model's head: apart from the head set and every pool, so choices
    made on it (lambda, the learning rate) never see the pool's or the test split's labels."""
    head_idx, val, _ = reserved(task)
    return _validation(task, val, _head(model, task, head_idx))


def _validation(task: MiniTask, idx: torch.Tensor, head: PrototypeHead) -> FewShotTask:
    return FewShotTask(
        task.name, task.train_images[idx], task.train_labels[idx], head, augment=shift_augment(task.flip)
    )


def _head(model: nn.Module, task: MiniTask, idx: torch.Tensor) -> PrototypeHead:
    return PrototypeHead.from_features(
        features(model, task.train_images[idx]), task.train_labels[idx], len(task.class_names)
    )


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Image features of uint8 images, normalised as every mini :class:`FewShotTask` does, in eval mode."""
    with evaluating(model):
        return torch.cat(
            [
                image_features(model, mini_normalise(images[i : i + batch_size]))
                for i in range(0, len(images), batch_size)
            ]
        )


def mini_normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as every mini model takes them (the pools' normalisation)."""
    return normalise(images, FewShotTask.mean, FewShotTask.std)


def model_suite(
    model: nn.Module, tasks: Sequence[MiniTask], shots: int | None = 100, seed: int = 0, disjoint: bool = False
) -> list[MiniEval]:
    """For ``model``: each task's few-shot pool (from :func:`pool_region`) and validation set with the model's own
    frozen prototype head, and its test split.

    The head is built from this model's features of the task's head set (no pool, no
    test data, no other model), so every method on this model uses the same head.
    """
    out = []
    for task in tasks:
        head_idx, val, _ = reserved(task)
        head = _head(model, task, head_idx)
        region = pool_region(task, shots, disjoint)
        fewshot = FewShotTask(task.name, *_draw(task, region, shots, seed), head, augment=shift_augment(task.flip))
        out.append(MiniEval(fewshot, _validation(task, val, head), task.test_images, task.test_labels))
    return out
