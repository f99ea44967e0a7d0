"""What every suite builds, and the one request every suite builder takes.

A suite turns a :class:`SuiteRequest` into :class:`SuiteInputs`: the source and target
models, each task's few-shot pool (with the target's head) and test set, and the source
task vectors by kind. The benchmark, ``align --suite`` and the CLI treat all suites alike.
A suite the single-run commands (``align``, ``eval``, ``baseline``, ``diagnose``) can
name also opens, from the same request, as a :class:`Suite`: models and vectors by
name, few-shot pools and test sets for whichever model a command loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.vectors.taskvector import TaskVector

if TYPE_CHECKING:
    from orthoxfer.models.loading import LoadedModel

TestSet = tuple[nn.Module, Callable[[], Any]]  # (target head, () -> iterable of (images, labels))


@dataclass
class SuiteTask:
    """One task as the benchmark needs it: the target's few-shot pool (with head) and its test set."""

    name: str
    pool: FewShotTask
    test: TestSet
    stands_for: str = ""
    val: FewShotTask | None = None  # where lambda and lr are chosen; None: a held-out part of the pool (paper)


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
    relate_images: torch.Tensor | None = None  # images both models take as they are: how related the pair is (mini)


@dataclass
class SuiteRequest:
    """Everything a suite builder or opener may use; each suite reads what it needs and refuses what it lacks."""

    seed: int = 0  # the few-shot draw, the alignment and (unless model_seed says otherwise) the mini pre-training
    model_seed: int | None = None  # mini and planted: the pre-training's seed when it differs from ``seed`` (a study
    # repeats draws and alignments on the one shipped pair)
    shots: int = 100
    size: str = "full"  # mini and planted: full | micro
    width: int | None = None  # mini and planted: the pre-trained models' width; None: the size's own (128 at full)
    pair: str | None = None  # mini: the rung of the ladder of relatedness (suites.mini.PAIRS); None = data
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
    augmentation: str = "suite"  # paper: the pools' augmentation recipe (data.fewshot.AUGMENTATIONS); others: suite
    reference_gelu: bool = False  # paper: the target built with GELU whatever it was trained with (the code's bug)
    disjoint_pools: bool = False  # mini: pools from a part of the training split the source vectors never saw


class Suite(Protocol):
    """A suite as the single-run commands use it; :func:`orthoxfer.suites.open_suite` opens one from a request."""

    # read-only here: a suite may hold them as class constants
    @property
    def name(self) -> str: ...

    @property
    def task_names(self) -> tuple[str, ...]: ...

    @property
    def default_shots(self) -> int: ...

    @property
    def record(self) -> dict[str, Any]:
        """What a run's config.json records about the suite."""

    @property
    def flags(self) -> list[str]:
        """The options that name this suite again on another command line."""

    def settings(self, section: str) -> dict[str, Any]:
        """The suite's defaults for a settings table (``align``, ``fewshot_ft``, ``finetune``)."""

    def check(self, spec: str) -> str:
        """Which model ``spec`` names, checked before any data, vector or weights are read."""

    def load(self, spec: str, device: str | torch.device = "cpu") -> LoadedModel: ...

    def vector(self, value: str) -> TaskVector:
        """A task vector file, or a name the suite knows."""

    def fewshot_tasks(
        self, model: LoadedModel, names: Sequence[str], shots: int | None, shots_per_class: int | None, seed: int
    ) -> dict[str, FewShotTask]: ...

    def validation_sets(self, model: LoadedModel, names: Sequence[str]) -> dict[str, FewShotTask] | None:
        """The suite's own validation sets, apart from every pool; None where a part of each pool is held out instead."""

    def test_data(self, names: Sequence[str]) -> Any:
        """The test data of ``names``, read before any model so that missing data fails first."""

    def test_sets(
        self,
        model: LoadedModel,
        data: Any,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        workers: int | None = None,
        shots: int | None = None,
        seed: int = 0,
    ) -> dict[str, tuple[nn.Module, Iterable]]: ...


@dataclass(frozen=True)
class SuiteEntry:
    """A registered suite: its builder, its settings tables by size, (if single commands can name it) its opener, and
    what identifies the models it builds itself, by size and width (for a run's config.json: a run resumed after they
    changed would mix rows of two pairs). ``defaults`` takes the size and the number of tasks run (None: all the
    suite's)."""

    build: Callable[[SuiteRequest], SuiteInputs]
    defaults: Callable[[str, int | None], dict[str, dict[str, Any]]]
    open: Callable[[SuiteRequest], Suite] | None = None
    models: Callable[[str, int | None], dict[str, Any]] = lambda size, width: {}
