"""Fine-tuning a model's sites: the source's task vectors, and the target's few-shot baseline.

The trained quantity is the update itself, never the model: ``embed`` learns a dense
delta per site, ``lora`` learns ``scale * B A`` per site (A kaiming-uniform, B zero,
so training starts at the pre-trained model), ``full`` learns a delta for every
parameter of the tower. The model runs with ``W + delta`` through
``torch.func.functional_call``, exactly as alignment runs ``W + U^T dW U``, so a
fine-tuning step is the floor an alignment step is measured against, and the result
is a :class:`~orthoxfer.vectors.taskvector.TaskVector` without any subtraction of models.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from orthoxfer.errors import UsageError
from orthoxfer.evaluation.accuracy import pool_accuracy
from orthoxfer.fit.loop import adamw, run_steps
from orthoxfer.fit.select import Validator
from orthoxfer.fit.stepper import Stepper
from orthoxfer.problem.tasks import Pool
from orthoxfer.vectors.sites import Site, default_root, find_sites, param_overrides, read_site
from orthoxfer.vectors.taskvector import TaskVector

KINDS = ("embed", "lora", "full")


@dataclass
class FinetuneSettings:
    """Defaults follow the paper's source fine-tuning (AdamW 1e-5, wd 0.1, clip 1, warm-up + cosine)."""

    kind: str = "embed"
    lr: float = 1e-5
    weight_decay: float = 0.1
    steps: int = 2000
    warmup: int = 500
    clip: float = 1.0
    batch_size: int = 128
    rank: int = 16
    lora_alpha: float = 32.0
    sites: str = "attn"
    augment: int = 1
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    select_every: int = 0  # k > 0: the update of the step that scored best on validation (start, every k, last)
    device: str = "cpu"
    compile: bool = False  # torch.compile the model's forward (pays on GPU; see ImageEncoder)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name in ("lr", "weight_decay", "steps", "warmup", "clip", "rank", "lora_alpha", "select_every"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.batch_size <= 0 or (self.kind == "lora" and self.rank == 0):
            raise UsageError("--batch-size (and --rank for lora) must be > 0")

    def replace(self, **changes: Any) -> FinetuneSettings:
        return dataclasses.replace(self, **changes)


class SiteUpdates(nn.Module):
    """The trainable update: dense deltas, LoRA factors, or (``full``) a delta for every tower parameter."""

    def __init__(
        self, model: nn.Module, sites: list[Site], settings: FinetuneSettings, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.kind, self.sites = settings.kind, sites
        self.scale = settings.lora_alpha / settings.rank if settings.kind == "lora" else 1.0
        n, (rows, d) = len(sites), sites[0].shape
        if len({s.shape for s in sites}) != 1:
            raise UsageError(
                "fine-tuning stacks the sites: choose sites of one shape (attn, or one kind of MLP weight)"
            )
        if settings.kind == "lora":
            bound = 1.0 / math.sqrt(d)  # kaiming-uniform with a = sqrt(5), as nn.Linear and the reference LoRA
            self.a = nn.Parameter((torch.rand(n, settings.rank, d, generator=generator) * 2 - 1) * bound)
            self.b = nn.Parameter(torch.zeros(n, rows, settings.rank))
        else:
            self.delta = nn.Parameter(torch.zeros(n, rows, d))
        self.others: list[str] = []
        if settings.kind == "full":
            root = default_root(model)
            site_params = {s.param for s in sites}
            self.others = [
                name for name, _ in model.named_parameters() if name.startswith(root) and name not in site_params
            ]
            self.rest = nn.ParameterList(nn.Parameter(torch.zeros_like(model.get_parameter(n))) for n in self.others)

    def site_deltas(self) -> torch.Tensor:
        if self.kind == "lora":
            return self.scale * (self.b @ self.a)
        return self.delta

    def overrides(self, model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
        out = param_overrides(model, self.sites, [self.site_deltas()], prefix=prefix)
        for name, delta in zip(self.others, getattr(self, "rest", [])):
            out[prefix + name] = model.get_parameter(name) + delta
        return out

    @torch.no_grad()
    def task_vector(self, meta: dict[str, Any]) -> TaskVector:
        """The update as a task vector on the CPU, as one loaded from disk would be, wherever it was trained."""

        def own(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", copy=True)  # one copy, from any device

        names = [s.name for s in self.sites]
        extra = {n: own(d) for n, d in zip(self.others, getattr(self, "rest", []))}
        if self.kind == "lora":
            lora = {n: (own(self.a[i]), own(self.b[i])) for i, n in enumerate(names)}
            return TaskVector(lora=lora, scale=self.scale, meta=dict(meta, kind="lora", rank=self.a.shape[1]))
        dense = {n: own(self.delta[i]) for i, n in enumerate(names)}
        return TaskVector(dense, extra=extra, meta=dict(meta, kind="dense", rank=None))


class FinetuneStep(Stepper):
    """One AdamW step on the update of the sites; the model itself stays frozen."""

    name = "finetune"  # each process that fine-tunes does so alone, on whole batches (ranks: SOLO)
    module: SiteUpdates

    def __init__(self, model: nn.Module, sites: list[Site], settings: FinetuneSettings) -> None:
        super().__init__(model, settings.device, settings.compile)
        self.settings = settings
        g = torch.Generator().manual_seed(settings.seed)
        self.module = SiteUpdates(self.model, sites, settings, g).to(self.device)
        self.use_optimiser(
            adamw(self.module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay), settings.clip
        )

    def losses(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, None]:
        with self.autocast:
            logits = head(functional_call(self.encoder, self.module.overrides(self.model, prefix="model."), (x,)))
        return F.cross_entropy(logits.float(), y), None


def finetune(
    model: nn.Module,
    tasks: Mapping[str, Pool],
    settings: FinetuneSettings,
    run=None,
    scope: str = "finetune",
    validation: Mapping[str, Pool] | None = None,
    validation_scales: tuple[float, ...] = (),
) -> TaskVector:
    """Fine-tune ``model``'s sites on ``tasks`` (cycled, as the aligners see them) and return the update.

    With one task this makes that task's vector on the source; with the aligners'
    few-shot tasks it is the paper's "Target w/ FT" baseline on exactly their images.
    ``validation`` (held-out parts of the tasks' data) is scored after every epoch, or with
    ``settings.select_every = k > 0`` at the start, every k steps and at the last step, and
    the update that scored best is returned (ties: the earliest; the start is the zero
    update), its step, score and lambda and the curve in ``meta["selection"]``. ``validation_scales``: each
    scored update tried at these lambdas, its best counting (the lambda it is given later
    is chosen on the same grid); empty: the update as it is.
    """
    if not tasks:
        raise UsageError("fine-tuning needs at least one task")
    if settings.select_every and not validation:
        raise UsageError("--select-every needs validation data; hold part of each pool out (--val-fraction)")
    sites = find_sites(model, settings.sites)
    for site in sites:
        if not torch.isfinite(read_site(model, site)).all():
            raise UsageError(f"the model has NaN or Inf weights at site {site.name}; check the checkpoint")
    torch.manual_seed(settings.seed)
    step = FinetuneStep(model, sites, settings)
    meta = {
        "tasks": list(tasks),
        "finetune": {k: v for k, v in dataclasses.asdict(settings).items() if k != "extra"},
        **settings.extra,
    }

    validate = None
    if validation:
        held_out = validation

        def scorer() -> Callable[[float], dict[str, float]]:
            update = step.module.task_vector(meta)  # once per scoring, however many lambdas it is tried at
            return lambda s: pool_accuracy(update.added_to_copy(step.model, s), held_out, step.device)

        validate = Validator(scorer, validation_scales or (1.0,))
    selection = run_steps(step, list(tasks.values()), settings, run, scope, validate)
    if selection is not None:
        meta["selection"] = selection.record()
    return step.module.task_vector(meta)
