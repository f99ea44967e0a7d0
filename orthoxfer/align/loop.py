"""The training loop shared by every trained strategy.

Cost model: one forward+backward of the target per few-shot batch is the floor. On
top of it, each step materialises ``W + scale * U^T dW U`` for all sites at once
(stacked U's, two batched matmuls; ``(U^T B)(A U)`` for LoRA) and runs the target
with those weights through ``torch.func.functional_call``. U is never applied to
activations. Host syncs happen only at logging and checkpoint steps.

Batches are a pure function of (seed, step): task ``step % T`` is visited, and its
k-th batch is the k-th slice of a stream of seeded permutations of the pool repeated
``augment`` times; augmentation draws from torch's global RNG reseeded per step. So a
resumed run replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.func import functional_call

from orthoxfer.align.base import ScopedProblem, SiteGroup, Solution, TrainedStrategy, orthogonality_error
from orthoxfer.align.settings import AlignSettings
from orthoxfer.artifacts import write_text
from orthoxfer.checkpoint import load_checkpoint, save_checkpoint
from orthoxfer.errors import OrthoxferError
from orthoxfer.problem import FewShotTask, ImageEncoder
from orthoxfer.sites import param_overrides


class AlignmentDiverged(OrthoxferError):
    """The loss became NaN or Inf; the last good U's are kept in the run's checkpoint."""


@dataclass
class StackedVector:
    """One group's task vector as stacks: dense ``dw`` (n, d, d) or LoRA ``a`` (n, r, d), ``b`` (n, d, r).

    ``scale`` (lambda and the LoRA scale) is folded in once, so a step does no extra work for it.
    """

    dw: torch.Tensor | None = None
    a: torch.Tensor | None = None
    b: torch.Tensor | None = None

    @classmethod
    def build(cls, problem: ScopedProblem, group: SiteGroup, scale: float, device: torch.device) -> StackedVector:
        tv = problem.vector
        names = [s.name for s in group.sites]
        if tv.lora and len({tv.lora[n][0].shape[0] for n in names}) == 1:
            a = torch.stack([tv.lora[n][0] for n in names]).float()
            b = torch.stack([tv.lora[n][1] for n in names]).float() * (scale * tv.scale)
            return cls(a=a.to(device), b=b.to(device))
        dw = torch.stack([tv.delta(n) for n in names]).float() * scale
        return cls(dw=dw.to(device))

    def rotated(self, u: torch.Tensor) -> torch.Tensor:
        """``U^T dW U`` for every site of the group, as one (n, d, d) tensor."""
        ut = u.transpose(-1, -2)
        if self.dw is not None:
            return ut @ self.dw @ u
        return (ut @ self.b) @ (self.a @ u)


def site_deltas(groups: list[SiteGroup], vectors: list[StackedVector], stacks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rotated deltas of all sites, in group order: the one place a step touches U."""
    out: list[torch.Tensor] = []
    for group, vec, stack in zip(groups, vectors, stacks):
        u = stack[group.index.to(stack.device)] if group.tied else stack
        out.extend(vec.rotated(u).unbind(0))
    return out


def batch_indices(task_pos: int, visit: int, pool: int, copies: int, batch_size: int, seed: int) -> torch.Tensor:
    """The ``visit``-th batch of one task: a slice of seeded permutations of ``pool * copies`` items."""
    virtual = pool * max(1, copies)
    start = visit * batch_size
    parts = []
    while len(parts) == 0 or sum(len(p) for p in parts) < batch_size:
        epoch, offset = divmod(start, virtual)
        g = torch.Generator().manual_seed(seed * 1_000_003 + task_pos * 7_919 + epoch)
        perm = torch.randperm(virtual, generator=g)
        take = perm[offset : offset + batch_size - sum(len(p) for p in parts)]
        parts.append(take)
        start += len(take)
    return torch.cat(parts) % pool


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


class TransformStack(nn.Module):
    """The parameterisations of every group, one module so one optimiser and one checkpoint serve all."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self) -> list[torch.Tensor]:
        return [p() for p in self.parts]


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def _batch(task: FewShotTask, index: torch.Tensor, augment: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = task.batch(index, augment=augment)
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class AlignStep:
    """One optimiser step of a trained strategy: the unit the loop repeats and the benchmark times.

    The target is frozen (``requires_grad_(False)``); only the strategy's parameters learn.
    """

    def __init__(
        self,
        strategy: TrainedStrategy,
        problem: ScopedProblem,
        groups: list[SiteGroup],
        init: list[torch.Tensor],
        settings: AlignSettings,
    ) -> None:
        self.strategy, self.problem, self.groups, self.settings = strategy, problem, groups, settings
        self.device = torch.device(settings.device)
        self.target = problem.target.to(self.device).requires_grad_(False)
        self.encoder = ImageEncoder(self.target)
        self.vectors = [StackedVector.build(problem, g, settings.scale, self.device) for g in groups]
        self.module = TransformStack([strategy.parameterise(u.to(self.device), settings) for u in init]).to(self.device)
        self.optimiser = strategy.optimiser(self.module, settings)
        self.base_lrs = [g["lr"] for g in self.optimiser.param_groups]
        cuda = self.device.type == "cuda"
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module, lr_scale: float = 1.0):
        """Returns (loss, ce, regulariser or None) as device tensors: no host sync here."""
        for group, lr in zip(self.optimiser.param_groups, self.base_lrs):
            group["lr"] = lr * lr_scale
        stacks = self.module()
        deltas = site_deltas(self.groups, self.vectors, stacks)
        overrides = param_overrides(self.target, self.problem.sites, deltas, prefix="model.")
        with self.autocast:
            features = functional_call(self.encoder, overrides, (x,))
            logits = head(features)
        ce = F.cross_entropy(logits.float(), y)
        reg = self.strategy.regulariser(stacks, self.settings)
        loss = ce if reg is None else ce + reg
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.settings.clip)
        self.optimiser.step()
        return loss, ce, reg

    @torch.no_grad()
    def orth_error(self) -> float:
        return max(orthogonality_error(s).max().item() for s in self.module())


def train_transforms(
    strategy: TrainedStrategy,
    problem: ScopedProblem,
    groups: list[SiteGroup],
    init: list[torch.Tensor],
    settings: AlignSettings,
    run,
) -> Solution:
    step_fn = AlignStep(strategy, problem, groups, init, settings)
    tasks = list(problem.tasks.values())
    checkpoint = run.file(f"checkpoint-{problem.scope}.safetensors") if run is not None else None
    start = 0
    if run is not None and run.resume and checkpoint.exists():
        start, _ = load_checkpoint(checkpoint, step_fn.module, step_fn.optimiser)
        _truncate_metrics(run, problem.scope, start)
    with progress_bar() as bar:
        job = bar.add_task(f"{strategy.name} [{problem.scope}]", total=settings.steps, completed=start, status="")
        for step in range(start, settings.steps):
            torch.manual_seed(settings.seed * 1_000_003 + step)  # augmentation RNG: a function of the step
            task_pos = step % len(tasks)
            task = tasks[task_pos]
            visit = step // len(tasks)
            index = batch_indices(task_pos, visit, len(task.labels), settings.augment, settings.batch_size, settings.seed)
            x, y = _batch(task, index, settings.augment > 1, step_fn.device)
            factor = lr_factor(step, settings.warmup, settings.steps)
            loss, ce, reg = step_fn(x, y, task.head, factor)
            done = step + 1
            last = done == settings.steps
            log_now = settings.log_every and (done % settings.log_every == 0 or last)
            save_now = checkpoint is not None and settings.checkpoint_every and (done % settings.checkpoint_every == 0 or last)
            if (log_now or save_now) and not torch.isfinite(loss):
                kept = f"the last checkpoint in {run.path}" if run is not None else "nothing (no run folder)"
                raise AlignmentDiverged(
                    f"loss became {loss.item()} at step {done} ({strategy.name}, {problem.scope}); kept {kept}; "
                    "try a smaller --lr, a larger --alpha or --clip 1.0"
                )
            if log_now:
                orth = step_fn.orth_error()
                record = {
                    "scope": problem.scope, "step": done, "task": task.name, "loss": loss.item(), "ce": ce.item(),
                    "penalty": 0.0 if reg is None else reg.item(), "orth_error": orth, "lr": step_fn.base_lrs[0] * factor,
                }
                if run is not None:
                    run.log(record)
                bar.update(job, completed=done, status=f"loss {record['loss']:.4f}  ce {record['ce']:.4f}  orth {orth:.2e}")
            else:
                bar.update(job, completed=done)
            if save_now:
                save_checkpoint(checkpoint, step_fn.module, step_fn.optimiser, done, {"scope": problem.scope, "method": strategy.name})
    with torch.no_grad():
        final = [s.detach().float().cpu() for s in step_fn.module()]
    return Solution(final, steps=settings.steps)


def _truncate_metrics(run, scope: str, step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from, so each step appears once."""
    path = run.file("metrics.jsonl")
    if not path.exists():
        return
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    keep = [json.dumps(r, sort_keys=True) for r in records if not (r["scope"] == scope and r["step"] > step)]
    write_text(path, "".join(line + "\n" for line in keep))
