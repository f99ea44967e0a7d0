"""The offline miniature: small CLIPs pre-trained here (A the source, B the target), eight generated tasks.

Data in :mod:`orthoxfer.data.mini`, models in :mod:`orthoxfer.models.pretrain`; every
model classifies with its own prototype heads. The ``planted`` suite
(:mod:`orthoxfer.suites.planted`) shares everything here but the target.

The target is a rung of a ladder of relatedness to A (``SuiteRequest.pair``,
:data:`PAIRS`): A itself, A's new release, A's corpus from another seed, or B (another
corpus and seed: the paper's setting and the default). Each pair is measured as well as
used: :func:`relate_images` are what its relatedness (CKA, Procrustes residual) is
computed on.

The single-run commands name its parts (:class:`MiniSuite`): ``mini:a`` and ``mini:b``
are the two pre-trained CLIPs (A is the source of every mini task vector, B the target
the README's quick start aligns into), ``mini:release`` and ``mini:seed`` the targets of
those rungs; ``mini:<task>`` (``mini:surfaces``, any of
:data:`~orthoxfer.data.mini.TASK_NAMES`) is model A's embed task vector for that task.
Each is made on first use and cached under the cache folder by everything that made it,
with the settings ``demo`` uses, so ``demo``, ``bench --suite mini`` and the single
commands share one cache: a name means the demo's seed-0 model or vector.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from orthoxfer.cache import cache_root
from orthoxfer.data.bundled import DATA_VERSION, IMAGE_SIZE
from orthoxfer.data.mini import TASK_NAMES, MiniTask, Size, check_size, mini_task, mini_tasks
from orthoxfer.data.mini_pools import (
    fewshot_pool,
    mini_normalise,
    model_suite,
    pool_region,
    shift_augment,
    source_training,
    task_head,
    validation_set,
)
from orthoxfer.errors import UsageError
from orthoxfer.fit.finetune import FinetuneSettings, finetune
from orthoxfer.models.loading import LoadedModel
from orthoxfer.models.pretrain import RECIPES, PretrainConfig, Which, check_which, pretrained_model
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import HOW_NOT_WHAT
from orthoxfer.suites.base import SuiteInputs, SuiteRequest, SuiteTask
from orthoxfer.vectors.taskvector import TaskVector

PREFIX = "mini:"
MODELS = tuple(RECIPES)  # a, b, seed, release
SIZES = ("full", "micro")
# the ladder of relatedness: pair -> the target model (A is always the source)
PAIRS: dict[str, Which] = {
    "same": "a",  # the source itself: direct addition must reach the source's fine-tuned accuracy
    "release": "release",  # the source with its pre-training continued on corpus b: a new release
    "seed": "seed",  # the source's corpus, another seed: the Git Re-Basin setting
    "data": "b",  # another corpus and another seed: the paper's setting
}
DEFAULT_PAIR = "data"
RELATE_PER_TASK = 32  # pool images per task that a pair's relatedness is measured on
STEPS_PER_TASK = 100  # optimiser steps per task for few-shot FT and every aligner: the paper's regime starts here
# bench's warm-up: the eight tasks' tenth, which the shipped demo and study kept at four tasks; a shorter run warms up
# for at most a fifth of its steps
WARMUP_STEPS = 80
# the four tasks with most room between few-shot FT and the ceiling on the shipped pair, ranked on validation on a
# pool draw no study seed uses (benchmarks/mini_regime.py -> benchmarks/results/mini-regime.json): the demo's and
# the study's. Ranked on test (seed 0) they were housenumbers, scenes, pictograms, coins.
HEADROOM_TASKS = ("housenumbers", "scenes", "relief", "pictograms")


def defaults(size: str = "full", tasks: int | None = None) -> dict[str, dict[str, Any]]:
    """Settings of the offline suite: the paper's regime at 32 px (README, "The regime"), sized for a 2-core CPU.

    Source vectors: 200 steps of 64 images on a task's whole training split (about 11
    epochs; each raises its task on the source by 9 to 66 points). Few-shot FT and the
    aligners: :data:`STEPS_PER_TASK` steps per task, the joint budget of the ``tasks``
    run (all eight when None; ``per-task`` mode shares it out), so that a run on fewer
    tasks gives each the same budget, not more, after :data:`WARMUP_STEPS` of warm-up.
    ``micro`` trains a few small steps at every stage, so that a smoke test of any
    command on the micro suite takes seconds.
    """
    steps = STEPS_PER_TASK * (tasks or len(TASK_NAMES))
    warmup = min(WARMUP_STEPS, steps // 5)
    tables = {
        "finetune": {
            "lr": 1e-3,
            "weight_decay": 0.0,
            "steps": 200,
            "warmup": 20,
            "batch_size": 64,
            "rank": 4,
            "lora_alpha": 8.0,
            "augment": 2,
            "log_every": 10,
        },
        "align": {
            "lr": 1e-2,
            "steps": steps,
            "warmup": warmup,
            "batch_size": 64,
            "augment": 4,
            "alpha": 1.0,
            "checkpoint_every": 200,
            "log_every": 10,
        },
        "fewshot_ft": {  # its step chosen on validation, as the anchored rows' are: a baseline gets what its rows get
            "select_every": 10,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "steps": steps,
            "warmup": warmup,
            "batch_size": 64,
            "augment": 4,
            "checkpoint_every": 200,
            "log_every": 10,
        },
    }
    if size == "micro":
        for table in tables.values():
            table.update(steps=4, warmup=1, batch_size=16)
    return tables


def default_shots(size: str) -> int:
    """Few-shot images per task: 32 (2 to 8 per class; the paper's 100 images are under one per class on Cars and
    SUN397), or 24 of a micro task's training images."""
    return 24 if size == "micro" else 32


def pretrain_config(request: SuiteRequest) -> PretrainConfig:
    """The pre-training of this request's size and width (None: the size's own), seeded by its model seed (A with
    2 seed, B with 2 seed + 1)."""
    base = PretrainConfig.micro() if request.size == "micro" else PretrainConfig()
    seed = request.seed if request.model_seed is None else request.model_seed
    width = base.width if request.width is None else request.width
    return dataclasses.replace(base, width=width, seed_a=2 * seed, seed_b=2 * seed + 1)


def models_record(size: str, width: int | None = None) -> dict[str, str]:
    """The recipe of the demo's pre-trained models (their seeds follow from it; it holds the width): a bench or study
    resumed after the shipped models changed, or at another width, must refuse, not mix rows of two pairs."""
    return {"pretrain_recipe": pretrain_config(SuiteRequest(size=size, width=width)).recipe_hash()}


def check_pair(pair: str | None) -> str:
    """The rung ``pair`` names (None: the default), or a one-line UsageError listing the rungs."""
    pair = DEFAULT_PAIR if pair is None else pair
    if pair not in PAIRS:
        raise UsageError(f"unknown pair {pair!r}; choose {', '.join(PAIRS)}")
    return pair


def target_name(pair: str | None) -> str:
    """The target's model name on the ladder: ``mini:a`` (same), ``mini:release``, ``mini:seed``, ``mini:b`` (data)."""
    return PREFIX + PAIRS[check_pair(pair)]


def relate_images(tasks: Sequence[MiniTask], shots: int, seed: int) -> torch.Tensor:
    """The first images of each task's few-shot pool, normalised as every mini model takes them.

    Relatedness is measured on the images the aligners see (no labels, no test data),
    the same for every pair of one seed.
    """
    return mini_normalise(torch.cat([fewshot_pool(t, shots, seed)[0][:RELATE_PER_TASK] for t in tasks]))


def cache_dir(request: SuiteRequest) -> Path:
    return cache_root(request.cache_dir)


def mini_source_vector(
    model: nn.Module,
    task: MiniTask,
    head: nn.Module,
    settings: FinetuneSettings,
    cache: Path,
    held_out: torch.Tensor | None = None,
) -> TaskVector:
    """The source's task vector for one mini task, cached by everything that made it.

    It is fine-tuned on the training split less the validation set, so that choices made
    on validation (lambda, the step, the method) never see images the vector was trained on
    (and less ``held_out``, a disjoint pool region, where pools must not overlap it either).
    """
    images = "train-less-validation"
    if held_out is not None:
        images += f"-less-{tensors_digest({'held_out': held_out})}"
    record = {
        "model": tower_digest(model),
        "head": tensors_digest(head.state_dict()),
        "task": task.name,
        "data": DATA_VERSION,
        "train": train_key(settings),
        "images": images,
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / "mini-vectors" / f"{task.name}-{settings.kind}-{digest}.safetensors"
    if path.is_file():
        return TaskVector.load(path)
    train = FewShotTask(task.name, *source_training(task, held_out), head, augment=shift_augment(task.flip))
    vector = finetune(
        model, {task.name: train}, settings.replace(extra={"suite": "mini", "source": "mini:a"}), scope=task.name
    )
    vector.save(path)
    return vector


def tower_digest(model: nn.Module) -> str:
    """A hash of the image tower's weights: a cached vector belongs to the very model A it was fine-tuned on.

    A config key would not do: the same config gives the shipped A on one run and a
    locally pre-trained A (other kernels, other weights) on another.
    """
    return tensors_digest(model.get_submodule("visual").state_dict())


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors' names and bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def train_key(settings: FinetuneSettings) -> dict:
    """The settings a cached vector depends on: not where or how it was trained (device, logging, compilation)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in HOW_NOT_WHAT | {"extra", "device"}}


def mini_test(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500):
    """Test batches of a mini task, normalised as its pools are."""
    return lambda: [
        (mini_normalise(images[i : i + batch_size]), labels[i : i + batch_size])
        for i in range(0, len(labels), batch_size)
    ]


def suite_inputs(
    request: SuiteRequest, source: nn.Module, target: nn.Module
) -> tuple[list[SuiteTask], dict, torch.Tensor]:
    """The target's tasks (pools with its own heads, test sets), the source's vectors (fine-tuned on the source's
    heads) and the images the pair is related on."""
    size = check_size(request.size)
    tasks = mini_tasks(size) if request.tasks is None else mini_tasks(size, request.tasks)
    disjoint = request.disjoint_pools
    on_source = model_suite(source, tasks, shots=request.shots, seed=request.seed, disjoint=disjoint)
    on_target = model_suite(target, tasks, shots=request.shots, seed=request.seed, disjoint=disjoint)
    cache = cache_dir(request)
    vectors = {
        kind: {
            t.name: mini_source_vector(
                source,
                t,
                s.fewshot.head,
                request.source_ft.replace(kind=kind),
                cache,
                pool_region(t, request.shots, True) if disjoint else None,
            )
            for t, s in zip(tasks, on_source)
        }
        for kind in request.kinds
    }
    suite_tasks = [
        SuiteTask(t.name, e.fewshot, (e.fewshot.head, mini_test(e.test_images, e.test_labels)), t.stands_for, e.val)
        for t, e in zip(tasks, on_target)
    ]
    return suite_tasks, vectors, relate_images(tasks, request.shots, request.seed)


def build(request: SuiteRequest) -> SuiteInputs:
    """The mini suite: model A is the source, the pair's target (model B by default) the target.

    ``same`` gets a copy of A, so that nothing done to the target can reach the source.
    """
    which = PAIRS[check_pair(request.pair)]
    pretrain = pretrain_config(request)
    source = pretrained_model("a", pretrain, cache_dir(request))
    target = copy.deepcopy(source) if which == "a" else pretrained_model(which, pretrain, cache_dir(request))
    tasks, vectors, images = suite_inputs(request, source, target)
    return SuiteInputs("mini", "mini:a", PREFIX + which, source, target, tasks, vectors, relate_images=images)


@dataclass(frozen=True)
class MiniSuite:
    """The mini suite for ``align``, ``eval``, ``baseline`` and ``diagnose``: models and vectors by name, pools, tests.

    Of its request it reads the size, the cache folder and the device (where a missing
    source vector is fine-tuned). A model's heads are its prototype heads from each
    task's head set, whatever pool a command draws, as in ``bench``.
    """

    request: SuiteRequest
    name: ClassVar[str] = "mini"
    task_names: ClassVar[tuple[str, ...]] = TASK_NAMES

    @classmethod
    def open(cls, request: SuiteRequest) -> MiniSuite:
        for flag, value in (("--data-root", request.data_root), ("--heads-dir", request.heads_dir)):
            if value is not None:
                raise UsageError(f"{flag} is for --suite paper; the mini suite ships its data and builds its own heads")
        if request.size not in SIZES:
            raise UsageError(f"unknown mini size {request.size!r}; use {' or '.join(SIZES)}")
        return cls(request)

    @property
    def size(self) -> Size:
        return check_size(self.request.size)

    @functools.cached_property
    def pretrain(self) -> PretrainConfig:
        return pretrain_config(
            dataclasses.replace(self.request, seed=0, model_seed=None)
        )  # names mean the demo's seed-0 pair

    @property
    def default_shots(self) -> int:
        return default_shots(self.size)

    def settings(self, section: str) -> dict[str, Any]:
        """The suite's defaults for a settings table (``align``, ``fewshot_ft``, ``finetune``).

        A single command carries one task's vector, so its alignment and few-shot FT get
        one task's budget (:data:`STEPS_PER_TASK`) with a tenth of it to warm up.
        """
        table = defaults(self.size)[section]
        if section in ("align", "fewshot_ft") and self.size == "full":
            table.update(steps=STEPS_PER_TASK, warmup=STEPS_PER_TASK // 10)
        return {**table, **({"shots": self.default_shots} if section == "align" else {})}

    @property
    def record(self) -> dict[str, Any]:
        return {"suite": self.name, "size": self.size, "cache_dir": str(cache_dir(self.request))}

    @property
    def flags(self) -> list[str]:
        """The options that name this suite again on another command line."""
        given = self.request.cache_dir
        return [
            "--suite",
            self.name,
            *(["--size", self.size] if self.size != "full" else []),
            *(["--cache-dir", str(given)] if given is not None else []),
        ]

    def check(self, spec: str) -> Which:
        """Which model ``spec`` names, before any minutes are spent on pre-training or fine-tuning."""
        which = spec.removeprefix(PREFIX) if spec.startswith(PREFIX) else None
        if which is None or which not in MODELS:
            raise UsageError(
                f"the mini suite's models are mini:a (the source of its vectors), mini:b, mini:seed and "
                f"mini:release, not {spec!r}"
            )
        return check_which(which)

    def load(self, spec: str, device: str | torch.device = "cpu") -> LoadedModel:
        """``mini:a``, ``mini:b``, ``mini:seed`` or ``mini:release``: the pre-trained model, from the cache or pre-trained
        now (minutes at full size)."""
        which = self.check(spec)
        model = pretrained_model(which, self.pretrain, cache_dir(self.request))
        return LoadedModel(
            model=model.to(device).eval(),
            preprocess=None,
            tokenizer=None,
            arch="mini",
            tag=which,
            image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mean=FewShotTask.mean,
            std=FewShotTask.std,
            quick_gelu=False,
        )

    def vector(self, value: str) -> TaskVector:
        """``mini:<task>`` (model A's embed vector, fine-tuned now if it is not cached) or a task vector file."""
        if not value.startswith(PREFIX):
            return TaskVector.load(value)
        name = value.removeprefix(PREFIX)
        if name not in TASK_NAMES:
            raise UsageError(
                f"unknown mini task vector {value!r}; choose mini:<task> with a task of {', '.join(TASK_NAMES)}"
            )
        task = mini_task(name, self.size)
        source = pretrained_model("a", self.pretrain, cache_dir(self.request))
        head = task_head(source, task)
        settings = FinetuneSettings(**self.settings("finetune"), device=str(self.request.device))
        return mini_source_vector(source, task, head, settings, cache_dir(self.request))

    def fewshot_tasks(
        self, model: LoadedModel, names: Sequence[str], shots: int | None, shots_per_class: int | None, seed: int
    ) -> dict[str, FewShotTask]:
        """Few-shot pools drawn from each task's train split, stratified over classes, with the model's own heads."""
        if shots_per_class is not None:
            raise UsageError(
                "--shots-per-class is for --suite paper; the mini suite draws --shots stratified over classes"
            )
        return {
            e.fewshot.name: e.fewshot for e in model_suite(model.model, mini_tasks(self.size, list(names)), shots, seed)
        }

    def validation_sets(self, model: LoadedModel, names: Sequence[str]) -> dict[str, FewShotTask]:
        """Each task's fixed validation set (apart from every pool) with the model's head: where ``bench`` chooses lambda."""
        return {t.name: validation_set(model.model, t) for t in mini_tasks(self.size, list(names))}

    def test_data(self, names: Sequence[str]) -> list[MiniTask]:
        return mini_tasks(self.size, list(names))

    def test_sets(
        self,
        model: LoadedModel,
        data: list[MiniTask],
        batch_size: int = 500,
        device: str | torch.device = "cpu",
        workers: int | None = None,
        shots: int | None = None,
        seed: int = 0,
    ) -> dict[str, tuple[nn.Module, Iterable]]:
        """Each task's test split with the model's head (from the task's head set; ``shots`` and ``seed`` draw no pool here)."""
        return {
            t.name: (task_head(model.model, t), mini_test(t.test_images, t.test_labels, batch_size)()) for t in data
        }
