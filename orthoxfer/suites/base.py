"""What every suite builds, and the one request every suite builder takes.

A suite turns a :class:`SuiteRequest` into :class:`SuiteInputs`: the source and target
models, each task's few-shot pool (with the target's head) and test set, and the source
task vectors by kind. The benchmark, ``align --suite`` and the CLI treat all suites alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.vectors.taskvector import TaskVector

TestSet = tuple[nn.Module, Callable[[], Any]]  # (target head, () -> iterable of (images, labels))


@dataclass
class SuiteTask:
    """One task as the benchmark needs it: the target's few-shot pool (with head) and its test set."""

    name: str
    pool: FewShotTask
    test: TestSet
    stands_for: str = ""


@dataclass
class SuiteInputs:
    suite: str
    source_name: str
    target_name: str
    source: nn.Module
    target: nn.Module
    tasks: list[SuiteTask]
    vectors: dict[str, dict[str, TaskVector]]  # kind -> task -> source task vector
    planted: dict[str, torch.Tensor] | None = None  # positive control: site -> the U* planted in the target




@dataclass
class SuiteRequest:
    """Everything a suite builder may use; each suite reads what it needs and refuses what it lacks."""

    seed: int = 0
    shots: int = 100
    size: str = "full"  # mini and planted: full | micro
    tasks: tuple[str, ...] | None = None  # None: the suite's own list
    kinds: tuple[str, ...] = ("embed", "lora")
    source_ft: FinetuneSettings = field(default_factory=FinetuneSettings)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path | None = None
    source: str | None = None  # paper: model specs, data, vectors
    target: str | None = None
    data_root: Path | None = None
    vectors_dir: Path | None = None
    heads_dir: Path | None = None
