"""The few-shot data every trained method sees, and how a model becomes a classifier.

A :class:`FewShotTask` holds its few images as uint8 at the model's resolution (small
enough to keep in memory for any suite) and augments them per batch, so each step
sees fresh views as in the paper ("images refreshed at each batch"). Heads are frozen
modules from image features to logits, built once per task and model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from orthoxfer.errors import UsageError

if TYPE_CHECKING:  # the paper's datasets pull in torchvision: not for every command's start
    from orthoxfer.data.paper import ImageSplit

Augment = Callable[[torch.Tensor], torch.Tensor]


def image_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Image features of a CLIP-style model (``encode_image``), or the output of any other module."""
    encode = getattr(model, "encode_image", None)
    return encode(images) if encode is not None else model(images)


class ImageEncoder(nn.Module):
    """``forward`` = :func:`image_features`, so ``torch.func.functional_call`` can run a CLIP's image path.

    Its parameter names are the wrapped model's prefixed with ``model.``. With
    ``compiled``, ``forward`` goes through ``torch.compile``; ``functional_call`` still swaps
    the weights in, which the compiled graph takes as inputs. On an H100 at batch 128 a
    ViT-B/32 fine-tuning step took 18.7 ms instead of 23.5 (the eager step leaves the GPU
    idle between small kernels); the first step pays the compilation (about 8 s).
    """

    def __init__(self, model: nn.Module, compiled: bool = False) -> None:
        super().__init__()
        self.model = model
        self._compiled = torch.compile(self._eager) if compiled else None

    def _eager(self, images: torch.Tensor) -> torch.Tensor:
        return image_features(self.model, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._eager(images) if self._compiled is None else self._compiled(images)


def normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images to the float input a model was trained on."""
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


class Pool(Protocol):
    """What training and scoring read of a task: a :class:`FewShotTask`, a :class:`SplitTask` or a :class:`TaskPart`."""

    @property
    def name(self) -> str: ...

    @property
    def head(self) -> nn.Module: ...

    @property
    def labels(self) -> torch.Tensor: ...

    def batch(self, index: torch.Tensor, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class FewShotTask:
    """One task's few-shot pool (train split only) and the frozen head used with it."""

    name: str
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    head: nn.Module  # frozen: image features -> logits
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    # one uint8 (3, H, W) image -> one augmented image, or a whole batch if it has `batched = True`;
    # randomness from torch's global RNG
    augment: Augment | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"task {self.name}: few-shot images must be a uint8 (N, 3, H, W) tensor")
        if len(self.images) != len(self.labels):
            raise ValueError(f"task {self.name}: {len(self.images)} images but {len(self.labels)} labels")

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return normalise(images, self.mean, self.std)

    def batch(self, index: torch.Tensor, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images and labels for ``index``, augmented image by image when asked."""
        images = self.images[index]
        if augment and self.augment is not None:
            batched = getattr(self.augment, "batched", False)  # some augmentations take the whole batch at once
            images = self.augment(images) if batched else torch.stack([self.augment(img) for img in images])
        return self.normalise(images), self.labels[index]

    def split(self, val_fraction: float, seed: int) -> tuple[FewShotTask, FewShotTask]:
        """A train/validation split of the pool, for choosing settings without touching test data."""
        train, val = (
            FewShotTask(self.name, self.images[p], self.labels[p], self.head, self.mean, self.std, self.augment)
            for p in split_order(len(self.labels), val_fraction, seed)
        )
        return train, val


def plain_batches(task: Pool, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A pool (or any task with the ``labels`` and ``batch`` contract) whole and in order, un-augmented: what
    evaluation and activation statistics see."""
    return [task.batch(index, augment=False) for index in torch.arange(len(task.labels)).split(batch_size)]


def pool_images(pools: Iterable[FewShotTask], batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """Every image of every pool, un-augmented, in batches on ``device``: the input of methods that match the two
    models' activations (procrustes, theseus), which never read the labels."""
    return [images.to(device) for pool in pools for images, _ in plain_batches(pool, batch_size)]


def split_order(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) indices of ``n`` items; validation gets at least one item."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    if n < 2:
        raise UsageError(f"cannot hold out validation data from {n} item(s); use more shots")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    return order[n_val:], order[:n_val]


@dataclass
class SplitTask:
    """A whole dataset split used like a few-shot pool: same ``batch`` contract, images read on demand.

    Fine-tuning a source on a full train split (tens of thousands of images) cannot
    hold the split in memory as a :class:`FewShotTask` does; unreadable images come
    back with label ``CORRUPT``, which cross-entropy ignores.
    """

    name: str
    data: ImageSplit  # with a transform ending in uint8 (see pixel_transform)
    head: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: Augment | None = None

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self.data.targets, dtype=torch.int64)

    def batch(self, index: torch.Tensor, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.data[i] for i in index.tolist()]
        images = torch.stack([img for img, _ in pairs])
        if augment and self.augment is not None:
            images = torch.stack([self.augment(img) for img in images])
        return normalise(images, self.mean, self.std), torch.tensor([label for _, label in pairs], dtype=torch.int64)

    def split(self, val_fraction: float, seed: int) -> tuple[TaskPart, TaskPart]:
        """Train and held-out parts, as views: the split is never copied into memory."""
        train, val = split_order(len(self.data.targets), val_fraction, seed)
        return TaskPart(self, train), TaskPart(self, val)


@dataclass
class TaskPart:
    """Some items of a :class:`SplitTask`, with the same ``batch`` contract."""

    task: SplitTask
    index: torch.Tensor

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def head(self) -> nn.Module:
        return self.task.head

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        return self.task.labels[self.index]

    def batch(self, index: torch.Tensor, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task.batch(self.index[index], augment)
