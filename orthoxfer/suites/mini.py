"""The offline miniature: two small CLIPs pre-trained here (A the source, B the target), eight generated tasks.

Data in :mod:`orthoxfer.data.mini`, models in :mod:`orthoxfer.models.pretrain`; every
model classifies with its own prototype heads. The ``planted`` suite
(:mod:`orthoxfer.suites.planted`) shares everything here but the target.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthoxfer.cache import cache_root
from orthoxfer.data.bundled import DATA_VERSION
from orthoxfer.data.mini import MiniTask, mini_tasks
from orthoxfer.data.mini_pools import model_suite, shift_augment
from orthoxfer.fit.finetune import FinetuneSettings, finetune
from orthoxfer.models.pretrain import PretrainConfig, pretrained_pair
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import HOW_NOT_WHAT
from orthoxfer.suites.base import SuiteInputs, SuiteRequest, SuiteTask
from orthoxfer.vectors.taskvector import TaskVector


def defaults() -> dict[str, dict[str, Any]]:
    """Settings of the offline suite, sized for the demo's budget on a 2-core CPU (see README)."""
    return {
        "finetune": {"lr": 1e-3, "weight_decay": 0.0, "steps": 60, "warmup": 6, "batch_size": 64, "rank": 4,
                     "lora_alpha": 8.0, "augment": 2, "log_every": 10},
        "align": {"lr": 1e-2, "steps": 60, "warmup": 6, "batch_size": 64, "augment": 4, "alpha": 1.0,
                  "checkpoint_every": 30, "log_every": 2},
        "fewshot_ft": {"lr": 1e-3, "weight_decay": 0.0, "steps": 60, "warmup": 6, "batch_size": 64, "augment": 4,
                       "checkpoint_every": 30, "log_every": 2},
    }  # fmt: skip



def pretrain_config(request: SuiteRequest) -> PretrainConfig:
    """The pre-training of this request's size, seeded by its seed (A with 2 seed, B with 2 seed + 1)."""
    base = PretrainConfig.micro() if request.size == "micro" else PretrainConfig()
    return dataclasses.replace(base, seed_a=2 * request.seed, seed_b=2 * request.seed + 1)


def cache_dir(request: SuiteRequest) -> Path:
    return Path(request.cache_dir).expanduser() if request.cache_dir is not None else cache_root()


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


def suite_inputs(request: SuiteRequest, source: nn.Module, target: nn.Module, pretrain: PretrainConfig) -> tuple[list[SuiteTask], dict]:
    """The target's tasks (pools with its own heads, test sets) and the source's vectors, fine-tuned on the source's heads."""
    tasks = mini_tasks(request.size) if request.tasks is None else mini_tasks(request.size, request.tasks)
    on_source = model_suite(source, tasks, shots=request.shots, seed=request.seed)
    on_target = model_suite(target, tasks, shots=request.shots, seed=request.seed)
    cache = cache_dir(request)
    vectors = {
        kind: {
            t.name: mini_source_vector(source, t, s.fewshot.head, request.source_ft.replace(kind=kind), cache, pretrain.key())
            for t, s in zip(tasks, on_source)
        }
        for kind in request.kinds
    }
    suite_tasks = [
        SuiteTask(t.name, e.fewshot, (e.fewshot.head, mini_test(e.fewshot, e.test_images, e.test_labels)), t.stands_for)
        for t, e in zip(tasks, on_target)
    ]
    return suite_tasks, vectors


def build(request: SuiteRequest) -> SuiteInputs:
    """The mini suite: model A is the source, model B the target."""
    pretrain = pretrain_config(request)
    source, target = pretrained_pair(pretrain, cache_dir(request))
    tasks, vectors = suite_inputs(request, source, target, pretrain)
    return SuiteInputs("mini", "mini:a", "mini:b", source, target, tasks, vectors)
