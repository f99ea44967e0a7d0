"""Suites: named tasks with their few-shot pools, heads and test sets, built for given models.

``paper`` reads the eight datasets from a data root and uses each model's own
zero-shot text heads. ``mini`` is the offline miniature (data in
:mod:`orthoxfer.data.mini`, models in :mod:`orthoxfer.models.pretrain`), with each
model's own prototype heads.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from orthoxfer.data.fewshot import fewshot_task, paper_augmentation, pixel_transform
from orthoxfer.data.mini import DATA_VERSION, MiniTask, mini_tasks, model_suite, shift_augment
from orthoxfer.data.paper import ImageSplit, dataset, load_split
from orthoxfer.models.heads import default_cache_dir, zero_shot_head
from orthoxfer.models.loading import LoadedModel
from orthoxfer.models.pretrain import PretrainConfig, pretrained_model, pretrained_pair
from orthoxfer.models.pretrain import default_cache_dir as pretrain_cache_dir
from orthoxfer.planted import planted_target
from orthoxfer.problem import Augment, FewShotTask, normalise, split_order
from orthoxfer.runs import HOW_NOT_WHAT
from orthoxfer.taskvector import TaskVector
from orthoxfer.train import FinetuneSettings, finetune


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


def paper_test_splits(names: list[str], data_root: Path | str) -> dict[str, ImageSplit]:
    """The test splits of ``names`` keyed by canonical name; read before any model, so missing data fails first."""
    return {dataset(n).name: load_split(dataset(n).name, data_root, "test") for n in names}


def paper_test_sets(
    model: LoadedModel,
    splits: dict[str, ImageSplit],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    heads_dir: Path | str | None = None,
) -> dict[str, tuple[nn.Module, Iterable]]:
    """Test loaders with ``model``'s preprocessing and its own zero-shot heads (computed before any vector is added)."""
    from orthoxfer.data.paper import make_loader

    sets = {}
    for name, split in splits.items():
        split.transform = model.preprocess
        sets[name] = (paper_head(model, name, heads_dir), make_loader(split, batch_size, device, workers))
    return sets


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
        return tuple(TaskPart(self, p) for p in split_order(len(self.data.targets), val_fraction, seed))  # type: ignore[return-value]


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


def paper_train_task(model: LoadedModel, name: str, data_root: Path | str, heads_dir: Path | str | None = None) -> SplitTask:
    """The whole train split of a paper dataset with ``model``'s zero-shot head, for fine-tuning a source."""
    canonical = dataset(name).name
    split = load_split(canonical, data_root, "train", transform=pixel_transform(model.preprocess))
    head = paper_head(model, canonical, heads_dir)
    return SplitTask(canonical, split, head, model.mean, model.std, paper_augmentation(model.image_size))


def mini_source_vector(
    model: nn.Module, task: MiniTask, head: nn.Module, settings: FinetuneSettings, cache: Path, model_key: str
) -> TaskVector:
    """The source's task vector for one mini task (fine-tuned on its whole train split), cached by everything that made it."""
    record = {"model": model_key, "task": task.name, "data": DATA_VERSION, "train": train_key(settings)}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / "mini-vectors" / f"{task.name}-{settings.kind}-{digest}.safetensors"
    if path.is_file():
        return TaskVector.load(path)
    train = FewShotTask(task.name, task.train_images, task.train_labels, head, augment=shift_augment(task.flip))
    vector = finetune(model, {task.name: train}, settings.replace(extra={"suite": "mini", "source": "mini:a"}), scope=task.name)
    vector.save(path)
    return vector


def train_key(settings: FinetuneSettings) -> dict:
    """The settings a cached vector depends on: not where or how it was trained (device, logging, compilation)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in HOW_NOT_WHAT | {"extra", "device"}}


def mini_test(pool: FewShotTask, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500):
    """Test batches of a mini task, normalised as its pool is."""
    return lambda: [(pool.normalise(images[i : i + batch_size]), labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)]


def mini_bench_inputs(
    pretrain: PretrainConfig,
    size: str,
    shots: int,
    seed: int,
    source_ft: FinetuneSettings,
    kinds: tuple[str, ...],
    cache_dir: Path | str | None = None,
    names: tuple[str, ...] | None = None,
    planted: bool = False,
):
    """The mini suite for the benchmark: model A is the source, model B the target, each with its own heads.

    ``planted``: the positive control; the target is model A itself with a known
    function-preserving permutation planted in it (:mod:`orthoxfer.planted`, seeded by ``seed``).
    """
    from orthoxfer.bench import BenchInputs, BenchTask

    cache = Path(cache_dir).expanduser() if cache_dir is not None else pretrain_cache_dir()
    if planted:
        source = pretrained_model("a", pretrain, cache)
        target, u_star = planted_target(source, seed)
    else:
        (source, target), u_star = pretrained_pair(pretrain, cache), None
    tasks = mini_tasks(size) if names is None else mini_tasks(size, names)
    on_source = model_suite(source, tasks, shots=shots, seed=seed)
    on_target = model_suite(target, tasks, shots=shots, seed=seed)
    vectors = {
        kind: {
            t.name: mini_source_vector(source, t, s.fewshot.head, source_ft.replace(kind=kind), cache, pretrain.key())
            for t, s in zip(tasks, on_source)
        }
        for kind in kinds
    }
    bench_tasks = [
        BenchTask(t.name, e.fewshot, (e.fewshot.head, mini_test(e.fewshot, e.test_images, e.test_labels)), t.stands_for)
        for t, e in zip(tasks, on_target)
    ]
    if planted:
        return BenchInputs("planted", "mini:a", f"mini:a permuted (seed {seed})", source, target, bench_tasks, vectors, u_star)
    return BenchInputs("mini", "mini:a", "mini:b", source, target, bench_tasks, vectors)


def paper_bench_inputs(
    source_spec: str,
    target_spec: str,
    names: list[str],
    data_root: Path | str,
    shots: int,
    seed: int,
    vectors_dir: Path | str,
    source_ft: FinetuneSettings,
    kinds: tuple[str, ...],
    device: torch.device,
    cache_dir: Path | str | None = None,
    heads_dir: Path | str | None = None,
):
    """The paper suite: open_clip checkpoints, zero-shot heads from each model's own text tower.

    Source task vectors are read from ``vectors_dir/<Task>-<kind>.safetensors``; a
    missing one is fine-tuned on the task's train split and written there first.
    """
    from orthoxfer.bench import BenchInputs, BenchTask
    from orthoxfer.data.paper import make_loader
    from orthoxfer.models.loading import load_model

    source = load_model(source_spec, cache_dir=cache_dir, device=device)
    target = load_model(target_spec, cache_dir=cache_dir, device=device)
    pools = paper_fewshot_tasks(target, names, data_root, shots, None, seed, heads_dir)
    vectors: dict[str, dict[str, TaskVector]] = {kind: {} for kind in kinds}
    for kind in kinds:
        for name in pools:
            path = Path(vectors_dir) / f"{name}-{kind}.safetensors"
            if not path.is_file():
                train = paper_train_task(source, name, data_root, heads_dir)
                meta = {"source": source_spec, "architecture": source.arch}
                settings = source_ft.replace(kind=kind, device=str(device), extra=meta)
                finetune(source.model, {name: train}, settings, scope=name).save(path)
            vectors[kind][name] = TaskVector.load(path)
    tasks = []
    for name, pool in pools.items():
        split = load_split(name, data_root, "test", transform=target.preprocess)
        tasks.append(BenchTask(name, pool, (pool.head, lambda split=split: make_loader(split, 256, device))))
    return BenchInputs("paper", source_spec, target_spec, source.model, target.model, tasks, vectors)
