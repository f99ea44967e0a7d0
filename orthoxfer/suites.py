"""Suites: named tasks with their few-shot pools and heads, built for a given model.

``paper`` reads the eight datasets from a data root and uses each model's own
zero-shot text heads. The offline ``mini`` suite lives in :mod:`orthoxfer.data.mini`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from orthoxfer.data.fewshot import fewshot_task, paper_augmentation, pixel_transform
from orthoxfer.data.paper import ImageSplit, dataset, load_split
from orthoxfer.models.heads import default_cache_dir, zero_shot_head
from orthoxfer.models.loading import LoadedModel
from orthoxfer.problem import Augment, FewShotTask, normalise


def paper_head(model: LoadedModel, name: str, heads_dir: Path | str | None = None) -> nn.Module:
    """``model``'s own zero-shot head for a paper dataset (cached on disk: the text tower runs once)."""
    spec = dataset(name)
    return zero_shot_head(model, None, spec.classnames, spec.templates, cache_dir=heads_dir or default_cache_dir(), name=spec.name)


def paper_fewshot_tasks(
    model: LoadedModel,
    names: list[str],
    data_root: Path | str,
    shots: int | None,
    shots_per_class: int | None,
    seed: int,
    heads_dir: Path | str | None = None,
) -> dict[str, FewShotTask]:
    """Few-shot pools (train split only) with ``model``'s own zero-shot heads, keyed by dataset name."""
    tasks = {}
    for name in names:
        canonical = dataset(name).name
        head = paper_head(model, canonical, heads_dir)
        tasks[canonical] = fewshot_task(canonical, data_root, model, head, shots=shots, shots_per_class=shots_per_class, seed=seed)
    return tasks


@dataclass
class SplitTask:
    """A whole dataset split used like a few-shot pool: same ``batch`` contract, images read on demand.

    Fine-tuning a source on a full train split (tens of thousands of images) cannot
    hold the split in memory as a :class:`FewShotTask` does; unreadable images come
    back with label ``CORRUPT``, which cross-entropy ignores.
    """

    name: str
    split: ImageSplit  # with a transform ending in uint8 (see pixel_transform)
    head: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: Augment | None = None

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self.split.targets, dtype=torch.int64)

    def batch(self, index: torch.Tensor, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.split[i] for i in index.tolist()]
        images = torch.stack([img for img, _ in pairs])
        if augment and self.augment is not None:
            images = torch.stack([self.augment(img) for img in images])
        return normalise(images, self.mean, self.std), torch.tensor([label for _, label in pairs], dtype=torch.int64)


def paper_train_task(model: LoadedModel, name: str, data_root: Path | str, heads_dir: Path | str | None = None) -> SplitTask:
    """The whole train split of a paper dataset with ``model``'s zero-shot head, for fine-tuning a source."""
    canonical = dataset(name).name
    split = load_split(canonical, data_root, "train", transform=pixel_transform(model.preprocess))
    head = paper_head(model, canonical, heads_dir)
    return SplitTask(canonical, split, head, model.mean, model.std, paper_augmentation(model.image_size))
