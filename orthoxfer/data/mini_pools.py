"""A mini task seen by one model: its stratified few-shot pool, the model's prototype head, the augmentation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.data.bundled import DATA_VERSION
from orthoxfer.data.image_ops import stratified
from orthoxfer.data.mini import MiniTask
from orthoxfer.errors import UsageError
from orthoxfer.models.prototype_head import PrototypeHead
from orthoxfer.problem.tasks import FewShotTask, image_features


@dataclass
class MiniEval:
    """What a method needs for one task on one model: the few-shot pool (with head) and the test split."""

    fewshot: FewShotTask
    test_images: torch.Tensor  # uint8; normalise with ``fewshot.normalise``
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

    def augment(images: torch.Tensor) -> torch.Tensor:
        out = random_shift(images, pad=pad)
        if flip:
            mirror = torch.rand(len(out)) < 0.5
            out[mirror] = out[mirror].flip(-1)
        return out.round().to(torch.uint8)

    augment.batched = True  # type: ignore[attr-defined]
    return augment


def fewshot_pool(task: MiniTask, shots: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``shots`` training images of ``task`` stratified over classes (``None``: the whole training split)."""
    if shots is None:
        return task.train_images, task.train_labels
    if shots < len(task.class_names):
        raise UsageError(f"task {task.name}: {shots} shots cannot cover its {len(task.class_names)} classes")
    idx = stratified(task.train_labels.numpy(), shots, np.random.default_rng([seed, DATA_VERSION]))
    idx_t = torch.from_numpy(idx)
    return task.train_images[idx_t], task.train_labels[idx_t]


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Image features of uint8 images, normalised as every mini :class:`FewShotTask` does, in eval mode."""
    was_training = model.training
    model.eval()
    norm = FewShotTask("features", images[:1], torch.zeros(1, dtype=torch.int64), nn.Identity()).normalise
    out = torch.cat([image_features(model, norm(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def model_suite(
    model: nn.Module, tasks: Sequence[MiniTask], shots: int | None = 100, seed: int = 0
) -> list[MiniEval]:
    """For ``model``: each task's few-shot pool with the model's own frozen prototype head, and its test split.

    The head is built from this model's features of the pool it comes with (no test
    data, no other model), so every method on this model uses the same head.
    """
    out = []
    for task in tasks:
        images, labels = fewshot_pool(task, shots, seed)
        head = PrototypeHead.from_features(features(model, images), labels, len(task.class_names))
        fewshot = FewShotTask(task.name, images, labels, head, augment=shift_augment(task.flip))
        out.append(MiniEval(fewshot, task.test_images, task.test_labels))
    return out
