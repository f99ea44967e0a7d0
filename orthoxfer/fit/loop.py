"""The step loop every trained method shares: alignment, fine-tuning, the few-shot baseline.

A *stepper* does one optimiser step on a batch and owns its parameters (``module``)
and optimiser; this loop does the rest the same way for all of them: which batch,
the learning-rate schedule, logging, checkpoints, resume, and stopping on NaN.

Batches are a pure function of (seed, step): task ``step % T`` is visited, and its
k-th batch is the k-th slice of a stream of seeded permutations of the pool repeated
``augment`` times (each repeat freshly augmented when ``augment > 1``); augmentation
draws from torch's global RNG reseeded per step. A resumed run therefore replays the
batches an uninterrupted run would have seen, and two methods given the same seed
see the same images in the same order.
"""

from __future__ import annotations

import ctypes
import functools
import math
import platform
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from orthoxfer.artifacts import load_artifact
from orthoxfer.errors import OrthoxferError
from orthoxfer.fit.checkpoint import KIND, restore_checkpoint
from orthoxfer.fit.distributed import Ranks
from orthoxfer.fit.select import StepSelection, Validator
from orthoxfer.problem.tasks import Pool
from orthoxfer.terminal import is_verbose, stage_progress


class Diverged(OrthoxferError):
    """The loss became NaN or Inf; the last good parameters are kept in the run's checkpoint."""


class Stepper(Protocol):
    @property
    def module(self) -> nn.Module: ...  # read only here, so a stepper may hold a narrower module

    optimiser: torch.optim.Optimizer
    device: torch.device
    name: str
    ranks: Ranks  # the processes that share each batch, each stepping on its part of it

    def __call__(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module, lr_scale: float = 1.0):
        """One optimiser step; returns (loss, ce, regulariser or None) as device tensors."""

    def metrics(self) -> dict[str, float]:
        """Extra numbers for the log at logging steps (may sync with the device)."""


class LoopSettings(Protocol):
    steps: int
    warmup: int
    batch_size: int
    augment: int
    seed: int
    log_every: int
    checkpoint_every: int
    select_every: int  # 0: train to the last step; k > 0: the step chosen on validation (see fit.select)


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed memory in the process for reuse (glibc: no mmap per large block, no trimming); once per process.

    A step allocates and frees gigabytes in blocks of 100 MB or more (at ViT-B/32 scale
    the stacked U's, deltas, their gradients, optimiser temporaries). glibc serves each
    such block with a fresh mmap and unmaps it on free, so every step page-faults all of
    it again, and in a VM a fault on memory the guest gave back can cost a host fault
    too. Measured on a 2-core VM with 12 steppers in one process: a riemannian-qr (LoRA)
    step 7.8-8.2 s -> 4.2-4.4 s, the fine-tuning floor 2.85 -> 2.65 s. The price: the
    process keeps its peak memory until it exits. Returns whether the setting applied.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW for every stepper, fused into one pass per parameter where torch has the kernel (CPU, CUDA).

    The same update to float rounding; on a 48 x 768 x 768 stack (the U's or the site
    deltas of ViT-B/32) one step takes 0.06 s instead of 0.33 s on a 2-core CPU, and the
    alignment steps and the fine-tuning floor they are measured against share it.
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def batch_indices(task_pos: int, visit: int, pool: int, copies: int, batch_size: int, seed: int) -> torch.Tensor:
    """The ``visit``-th batch of one task: a slice of seeded permutations of ``pool * copies`` items."""
    virtual = pool * max(1, copies)
    start, wanted = visit * batch_size, batch_size
    parts = []
    while wanted > 0:
        epoch, offset = divmod(start, virtual)
        g = torch.Generator().manual_seed(seed * 1_000_003 + task_pos * 7_919 + epoch)
        take = torch.randperm(virtual, generator=g)[offset : offset + wanted]
        parts.append(take)
        start += len(take)
        wanted -= len(take)
    return torch.cat(parts) % pool


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def task_batch(
    tasks: Sequence[Pool], step: int, settings: LoopSettings, device: torch.device, part: slice = slice(None)
):
    """The task, images and labels of ``step`` (its ``part`` of them): a function of (seed, step) only.

    The whole batch is drawn and augmented before ``part`` is cut from it: augmentation
    draws from one stream per step, so a process that shares the batch sees exactly the
    pixels a single process would, at the price of augmenting images it does not use.
    """
    torch.manual_seed(settings.seed * 1_000_003 + step)  # augmentation RNG
    pos = step % len(tasks)
    task = tasks[pos]
    index = batch_indices(
        pos, step // len(tasks), len(task.labels), settings.augment, settings.batch_size, settings.seed
    )
    x, y = task.batch(index, augment=settings.augment > 1)
    return task, x[part].to(device, non_blocking=True), y[part].to(device, non_blocking=True)


def epoch_steps(tasks: Sequence[Pool], settings: LoopSettings) -> int:
    """Steps in which every task's pool (times its augmented copies) has been visited once."""
    longest = max(len(t.labels) for t in tasks) * max(1, settings.augment)
    return len(tasks) * math.ceil(longest / settings.batch_size)


def run_steps(
    stepper: Stepper,
    tasks: Sequence[Pool],
    settings: LoopSettings,
    run,
    scope: str,
    validate: Validator | None = None,
) -> StepSelection | None:
    """Train ``stepper`` for ``settings.steps`` steps, resuming from ``run``'s checkpoint when asked.

    ``validate`` (accuracy on held-out data, per task and ``mean``, at its best lambda)
    runs after every epoch and after the last step; its scores and lambda go to ``validation.jsonl`` and the
    progress line (``val`` the latest mean, ``best`` the best and its step), and a line
    per scoring is printed only under ``orthoxfer --verbose``: fifty of them drown a log.
    With ``settings.select_every = k > 0`` it runs instead at the start, every k steps and
    after the last step, and the module ends in the state whose ``mean`` scored best
    (ties: the earliest); the returned :class:`~orthoxfer.fit.select.StepSelection` says
    which step that was.
    """
    checkpoint = f"checkpoint-{scope}.safetensors"
    if settings.select_every and validate is None:
        raise OrthoxferError(f"{stepper.name} [{scope}]: choosing the step on validation needs validation data")
    selection = StepSelection(settings.select_every, validate.grid()) if settings.select_every and validate else None
    start = 0
    if run is not None and run.resume and run.file(checkpoint).exists():
        tensors, meta = load_artifact(run.file(checkpoint), KIND)
        start, meta = restore_checkpoint(tensors, meta, stepper.module, stepper.optimiser)
        if selection is not None:
            selection.restore(tensors, meta)
        for name in ("metrics.jsonl", "validation.jsonl"):
            run.truncate_log(name, scope, start)
    epoch = epoch_steps(tasks, settings)
    for task in tasks:
        task.head.to(stepper.device)  # heads come from a cache on the CPU; a module moves in place
    best: tuple[float, int] | None = None  # (mean validation accuracy, step)
    status = shown = ""

    def validated(done: int, bar) -> str:
        nonlocal best
        found = validate()  # type: ignore[misc]
        scores = found.scores
        if run is not None:
            run.log(
                {"scope": scope, "step": done, "epoch": done / epoch, "accuracy": scores, "scale": found.scale},
                "validation.jsonl",
            )
        if best is None or scores["mean"] > best[0]:
            best = (scores["mean"], done)
        if is_verbose():
            bar.console.print(
                f"{stepper.name} [{scope}] step {done} (epoch {done / epoch:.3g}): validation accuracy "
                + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
            )
        if selection is not None:
            chosen = torch.tensor([scores["mean"], found.scale], dtype=torch.float64, device=stepper.device)
            stepper.ranks.broadcast_([chosen])  # processes that share U's choose one step: rank 0's
            selection.offer(done, chosen[0].item(), chosen[1].item(), stepper.module)
        return f"val {scores['mean']:.3f} best {best[0]:.3f}@{best[1]}"

    with stage_progress() as bar:  # a live bar in a terminal, lines in a log
        job = bar.add_task(f"{stepper.name} [{scope}]", total=settings.steps, completed=start, status="")
        if selection is not None and start == 0:
            shown = validated(0, bar)  # the start itself is a candidate: training must beat it
        for step in range(start, settings.steps):
            task, x, y = task_batch(tasks, step, settings, stepper.device, stepper.ranks.part(settings.batch_size))
            factor = lr_factor(step, settings.warmup, settings.steps)
            loss, ce, reg = stepper(x, y, task.head, factor)
            done = step + 1
            last = done == settings.steps
            log_now = settings.log_every and (done % settings.log_every == 0 or last)
            save_now = run is not None and settings.checkpoint_every and (done % settings.checkpoint_every == 0 or last)
            if (log_now or save_now) and not torch.isfinite(loss):
                kept = f"the last checkpoint in {run.path}" if run is not None else "nothing (no run folder)"
                raise Diverged(
                    f"loss became {loss.item()} at step {done} ({stepper.name}, {scope}); kept {kept}; "
                    "try a smaller --lr, a larger --alpha or --clip 1.0"
                )
            if log_now:
                record = {
                    "scope": scope,
                    "step": done,
                    "task": task.name,
                    "loss": loss.item(),
                    "ce": ce.item(),
                    "penalty": 0.0 if reg is None else reg.item(),
                    "lr_scale": factor,
                    **stepper.metrics(),
                }
                if run is not None:
                    run.log(record)
                status = " ".join(f"{k} {record[k]:.3g}" for k in ("loss", "orth_error") if k in record)
            if validate is not None and (
                selection.due(done, settings.steps) if selection is not None else done % epoch == 0 or last
            ):
                shown = validated(done, bar)
            bar.update(job, completed=done, status=" ".join(p for p in (status, shown) if p))
            if save_now:
                meta = {"scope": scope, "method": stepper.name}
                if selection is not None:
                    meta["selection"] = selection.header()
                extra = selection.tensors() if selection is not None else None
                run.save_checkpoint(checkpoint, stepper.module, stepper.optimiser, done, meta, extra)
    if selection is not None:
        selection.choose(stepper.module)
    return selection
