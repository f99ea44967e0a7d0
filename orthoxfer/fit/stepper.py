"""One optimiser step over a frozen model: what an alignment step and a fine-tuning step share.

A stepper holds the model on its device (frozen: only its own ``module`` learns), the
encoder the forward goes through (through ``torch.compile`` if asked), bf16 autocast on CUDA (or
as ``precision`` says: :func:`autocast_for`),
and the one sequence every step runs: learning rates scaled by the schedule, zero_grad,
backward, gradients (and the reported loss terms) averaged across processes that share
the batch, clipping, the optimiser step. A subclass builds ``module`` and its optimiser
and says what the loss is (:meth:`Stepper.losses`). The loop in :mod:`orthoxfer.fit.loop`
repeats steps; ``bench-speed`` times them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext

import torch
from torch import nn

from orthoxfer.fit.distributed import SOLO, Ranks
from orthoxfer.fit.loop import keep_freed_memory
from orthoxfer.problem.tasks import ImageEncoder


def autocast_for(device: torch.device, precision: str = "auto"):
    """The forward's autocast: ``auto`` = bf16 on CUDA and none elsewhere, ``fp32`` = none, ``bf16`` = bf16 on any
    device (on a CPU too, so what a GPU run rounds away can be seen without one)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class Stepper(ABC):
    name: str
    module: nn.Module  # what learns
    optimiser: torch.optim.Optimizer
    ranks: Ranks = SOLO  # processes sharing each batch (their gradients are averaged)

    def __init__(self, model: nn.Module, device: str, compile: bool, precision: str = "auto") -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.model = model.to(self.device).requires_grad_(False)
        self.encoder = ImageEncoder(self.model, compiled=compile)
        self.precision = precision
        self.autocast = autocast_for(self.device, precision)

    def use_optimiser(self, optimiser: torch.optim.Optimizer, clip: float) -> None:
        """The optimiser of ``module``, its learning rates as the schedule's base, and the gradient-norm clip (0: off)."""
        self.optimiser, self.clip = optimiser, clip
        self.base_lrs = [group["lr"] for group in optimiser.param_groups]

    @abstractmethod
    def losses(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cross-entropy on the batch and the regulariser (None when there is none), as device tensors."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module, lr_scale: float = 1.0):
        """Returns (loss, ce, regulariser or None) as device tensors: no host sync here."""
        for group, lr in zip(self.optimiser.param_groups, self.base_lrs):
            group["lr"] = lr * lr_scale
        ce, reg = self.losses(x, y, head)
        loss = ce if reg is None else ce + reg
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.ranks.size > 1:  # equal parts: the mean of the parts' gradients is the whole batch's
            terms = [t.detach() for t in (ce, reg) if t is not None]
            self.ranks.average_([p.grad for p in self.module.parameters() if p.grad is not None] + terms)
            ce, reg = terms[0], (terms[1] if reg is not None else None)
            loss = ce if reg is None else ce + reg
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimiser.step()
        return loss, ce, reg

    def metrics(self) -> dict[str, float]:
        """What the loop logs besides the loss terms (e.g. the orthogonality error); nothing by default."""
        return {}
