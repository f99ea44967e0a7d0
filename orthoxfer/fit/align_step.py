"""The alignment step every trained strategy shares (the loop around it is :mod:`orthoxfer.fit.loop`).

Cost model: one forward+backward of the target per few-shot batch is the floor. On
top of it, each step materialises ``W + scale * U^T dW U`` for all sites at once
(stacked U's; ``U^T dW U`` is 2 batched matmuls forward and 3 backward, ``(U^T B)(A U)``
for LoRA) and runs the target with those weights through ``torch.func.functional_call``.
The rotated stack goes to the model without being cut per site: q, k and v of a block
are one contiguous slice of it, the rows of ``in_proj_weight``. U is never applied to
activations. Host syncs happen only at logging and checkpoint steps.

Precision (``AlignSettings.precision``): U itself (its parameterisation, retraction,
penalty and orthogonality error) is float32 everywhere. With ``auto`` (the default) on
CUDA, and with ``bf16`` on any device, the model runs in bf16 autocast, so ``W + scale * U^T dW U``
is rounded to bf16 before any image sees it; the rotation product there runs in bf16
too (the stacked vector is kept in bf16, U is cast for the product, its gradient comes
back in float32). The error this adds to the delta, about 2^-8 of ``|U^T dW U|``, is far
below the bf16 rounding of ``W`` itself that the forward applies anyway, since a task
vector is small beside the weights (measured on ViT-B/32: logits against an all-float32
forward differ by 1.17e-2 with a float32 rotation, 1.18e-2 with a bf16 one); on an H100 a float32 batched product of the stack
takes 1 ms and a bf16 one 0.1 ms, and the dense rotation costs five of them a step.
What bf16 does lose is the *change* of U within a run: at lr 1e-5 a step moves U^T dW U
by 1e-8 to 1e-7, far below the bf16 spacing of W (about 2e-4), so the forward sees it as
whole-ulp jumps of a few entries: cosine with the exact change 0.01-0.03 after one step,
0.2-0.6 after 800 steps' worth, 0.6-0.99 after 6,400 (benchmarks/precision_cast.py,
benchmarks/results/precision-cast-cpu.md, 768-wide synthetic weights). U still learns,
since its float32 copy accumulates the gradients. ``fp32`` keeps
``W + U^T dW U`` and the forward in float32 on every device (slower on a GPU).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from orthoxfer.errors import UsageError
from orthoxfer.fit import distributed
from orthoxfer.fit.loop import run_steps
from orthoxfer.fit.select import Validator
from orthoxfer.fit.stepper import Stepper
from orthoxfer.problem.align_problem import ScopedProblem, SiteGroup
from orthoxfer.strategies.base import Solution
from orthoxfer.strategies.linalg import factored_orthogonality_error, orthogonality_error, rotate_dense, rotate_factored
from orthoxfer.vectors.sites import param_overrides

if TYPE_CHECKING:
    from orthoxfer.strategies.settings import AlignSettings
    from orthoxfer.strategies.trained import TrainedStrategy


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

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)`` of a LoRA stack; a stack without ``dw`` is built with both."""
        if self.a is None or self.b is None:
            raise AssertionError("a stacked vector holds dw or both LoRA factors")
        return self.a, self.b

    @property
    def dtype(self) -> torch.dtype:
        """The precision the rotation runs in: U is cast to it, its gradient comes back in U's own."""
        return (self.dw if self.dw is not None else self.factors()[0]).dtype

    def to(self, dtype: torch.dtype) -> StackedVector:
        return StackedVector(*(None if t is None else t.to(dtype) for t in (self.dw, self.a, self.b)))

    def rotated(self, u: torch.Tensor) -> torch.Tensor:
        """``U^T dW U`` for every site of the group, as one (n, d, d) tensor."""
        u = u.to(self.dtype)
        if self.dw is not None:
            return rotate_dense(u, self.dw)
        a, b = self.factors()
        return (u.mT @ b) @ (a @ u)

    def rotated_factored(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``U^T dW U`` for ``U = I + L R^T``, never forming U (see :func:`rotate_factored`)."""
        left, right = left.to(self.dtype), right.to(self.dtype)
        if self.dw is not None:
            return rotate_factored(self.dw, left, right)
        a, b = self.factors()
        ub = torch.baddbmm(b, right, left.mT @ b)  # U^T B
        au = torch.baddbmm(a, a @ left, right.mT)  # A U
        return ub @ au

    @torch.no_grad()
    def carried_by(self, base: torch.Tensor) -> StackedVector:
        """The vector moved once by a fixed start ``U0`` (``U0^T dW U0``), so ``U = U0 (I + L R^T)`` needs only the factors."""
        if self.dw is not None:
            return StackedVector(dw=base.mT @ self.dw @ base)
        a, b = self.factors()
        return StackedVector(a=a @ base, b=base.mT @ b)


class Factored(Protocol):
    """A low-rank parameterisation ``U = U0 (I + L R^T)``: its start ``U0`` (None for I) and its factors."""

    base: torch.Tensor | None

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]: ...


def is_factored(part: nn.Module) -> TypeGuard[Factored]:
    return hasattr(part, "factors")


def factored_parts(parts: Iterable[nn.Module]) -> list[Factored] | None:
    """The parts as low-rank parameterisations, or None unless every one is (the step then rotates in O(d^2 k))."""
    out: list[Factored] = []
    for part in parts:
        if not is_factored(part):
            return None
        out.append(part)
    return out


def site_deltas(
    groups: list[SiteGroup], vectors: list[StackedVector], stacks: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Rotated deltas, one (n_sites, d, d) stack per group in site order: the one place a step touches U.

    Tied groups gather their U's by ``group.index``; :class:`AlignStep` moves it to its
    device once, so a step copies nothing from the host.
    """
    return [
        vec.rotated(stack[group.index.to(stack.device)] if group.tied else stack)
        for group, vec, stack in zip(groups, vectors, stacks)
    ]


def factored_deltas(groups: list[SiteGroup], vectors: list[StackedVector], parts: list[Factored]) -> list[torch.Tensor]:
    """As :func:`site_deltas` for low-rank parameterisations ``U = U0 (I + L R^T)``, from their factors only.

    ``vectors`` must already be carried by each part's ``U0`` (:meth:`StackedVector.carried_by`).
    """
    deltas = []
    for group, vec, part in zip(groups, vectors, parts):
        left, right = part.factors()
        if group.tied:
            left, right = left[group.index], right[group.index]
        deltas.append(vec.rotated_factored(left, right))
    return deltas


class Transforms:
    """The current U's as a regulariser or a metric reads them: full stacks, or orthogonality errors.

    Low-rank parameterisations give their errors from their factors (O(d^2 k) for the
    whole step); the stacks are built only if something asks for them.
    """

    def __init__(
        self, parts: list[nn.Module], stacks: list[torch.Tensor] | None = None, starts: list[torch.Tensor] | None = None
    ) -> None:
        self.parts, self._stacks, self.starts = parts, stacks, starts

    def stacks(self) -> list[torch.Tensor]:
        if self._stacks is None:
            self._stacks = [p() for p in self.parts]
        return self._stacks

    def orthogonality_errors(self) -> list[torch.Tensor]:
        """``||U^T U - I||_F`` of every U, one tensor per group."""
        factored = factored_parts(self.parts) if self._stacks is None else None
        if factored is not None:
            return [factored_orthogonality_error(*p.factors()) for p in factored]
        return [orthogonality_error(s) for s in self.stacks()]

    def start_distances(self) -> list[torch.Tensor]:
        """``||U - U0||_F^2`` of every U, one tensor per group (what the ``anchor`` option weighs).

        A low-rank ``U = U0 (I + L R^T)`` with U0 orthogonal (I or procrustes) is ``||L R^T||_F^2
        = sum((L^T L) * (R^T R))``: k x k products, no d x d matrix.
        """
        factored = factored_parts(self.parts) if self._stacks is None else None
        if factored is not None:
            return [((lf.mT @ lf) * (rf.mT @ rf)).sum((-2, -1)) for lf, rf in (p.factors() for p in factored)]
        if self.starts is None:
            raise ValueError("the distance from the start needs the start stacks")
        return [(s - s0).square().sum((-2, -1)) for s, s0 in zip(self.stacks(), self.starts)]


class TransformStack(nn.Module):
    """The parameterisations of every group, one module so one optimiser and one checkpoint serve all."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self) -> list[torch.Tensor]:
        return [p() for p in self.parts]


class WithWeights(nn.Module):
    """An encoder run with some of its weights replaced (``torch.func.functional_call``), as one module to score."""

    def __init__(self, encoder: nn.Module, overrides: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.encoder, self.overrides = encoder, overrides

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.encoder, self.overrides, (images,))


def bf16(device: torch.device, precision: str) -> bool:
    """Whether a step on ``device`` at ``precision`` runs the rotation and the forward in bf16."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


class AlignStep(Stepper):
    """One optimiser step of a trained strategy: the unit the loop repeats and the benchmark times.

    The target is frozen (``requires_grad_(False)``); only the strategy's parameters learn.
    A shared problem's processes start from rank 0's parameters and average their
    gradients (and the loss terms they report) after each backward, so they take the
    same steps; alone, a step communicates nothing.
    """

    module: TransformStack

    def __init__(
        self,
        strategy: TrainedStrategy,
        problem: ScopedProblem,
        groups: list[SiteGroup],
        init: list[torch.Tensor],
        settings: AlignSettings,
    ) -> None:
        super().__init__(problem.target, settings.device, settings.compile, settings.precision)
        groups = [replace(g, index=g.index.to(self.device)) for g in groups]
        self.strategy, self.problem, self.groups, self.settings = strategy, problem, groups, settings
        self.name = strategy.name
        self.ranks = distributed.ranks() if problem.shared else distributed.SOLO
        self.ranks.check_batch(settings.batch_size)
        self.sites = [s for g in groups for s in g.sites]  # the order of the rotated stacks
        self.vectors = [StackedVector.build(problem, g, settings.scale, self.device) for g in groups]
        self.module = TransformStack([strategy.parameterise(u.to(self.device), settings) for u in init]).to(self.device)
        self.ranks.broadcast_(self.module.state_dict().values())  # before anything is derived from a start U0
        # low-rank parameterisations expose U = U0 (I + L R^T): the step then costs O(d^2 k), not O(d^3)
        self.factored_parts = factored_parts(self.module.parts)
        self.factored = self.factored_parts is not None
        # U0, which the anchor measures a full U from (a factored U measures from its factors)
        self.starts = None if self.factored or not settings.anchor else [u.to(self.device, torch.float32) for u in init]
        if self.factored_parts is not None:
            self.vectors = [
                v if p.base is None else v.carried_by(p.base[g.index] if g.tied else p.base)
                for v, p, g in zip(self.vectors, self.factored_parts, groups)
            ]
        if bf16(self.device, settings.precision):  # the rotation runs at the model's precision (module docstring)
            self.vectors = [v.to(torch.bfloat16) for v in self.vectors]
        self.use_optimiser(strategy.optimiser(self.module, settings), settings.clip)

    def losses(self, x: torch.Tensor, y: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        transforms = Transforms(list(self.module.parts), None if self.factored else self.module(), self.starts)
        ce = F.cross_entropy(self.logits(x, head, transforms).float(), y)
        terms = [
            t
            for t in (
                self.strategy.regulariser(transforms, self.settings),
                self.strategy.anchoring(transforms, self.settings),
            )
            if t is not None
        ]
        return ce, sum(terms[1:], terms[0]) if terms else None

    def logits(self, x: torch.Tensor, head: nn.Module, transforms: Transforms) -> torch.Tensor:
        """The target's logits with every site carrying its rotated delta (U maths in float32, the model autocast)."""
        if self.factored_parts is not None:  # the parts that ``transforms`` holds, as their factors
            deltas = factored_deltas(self.groups, self.vectors, self.factored_parts)
        else:
            deltas = site_deltas(self.groups, self.vectors, transforms.stacks())
        overrides = param_overrides(self.model, self.sites, deltas, prefix="model.")
        with self.autocast:
            return head(functional_call(self.encoder, overrides, (x,)))

    @torch.no_grad()
    def carrying(self, scale: float | None = None) -> nn.Module:
        """The target carrying ``scale * U^T dW U`` at the current U's (``scale``: the training one unless given), for
        scoring: its weights swapped in, never copied."""
        transforms = Transforms(list(self.module.parts), None if self.factored else self.module())
        if self.factored_parts is not None:  # the parts that ``transforms`` holds, as their factors
            deltas = factored_deltas(self.groups, self.vectors, self.factored_parts)
        else:
            deltas = site_deltas(self.groups, self.vectors, transforms.stacks())
        if scale is not None and scale != self.settings.scale:  # the stacked vectors hold the training scale
            deltas = [d * (scale / self.settings.scale) for d in deltas]
        return WithWeights(self.encoder, param_overrides(self.model, self.sites, deltas, prefix="model."))

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        # in full, not from factors: the Gram identity loses the digits an exact strategy's ~1e-6 needs
        return {"orth_error": max(orthogonality_error(s).max().item() for s in self.module())}


def train_transforms(
    strategy: TrainedStrategy,
    problem: ScopedProblem,
    groups: list[SiteGroup],
    init: list[torch.Tensor],
    settings: AlignSettings,
    run,
) -> Solution:
    step = AlignStep(strategy, problem, groups, init, settings)
    validate = None
    if settings.select_every:
        if not problem.validation:
            raise UsageError(f"--select-every needs validation data for {problem.scope!r}; none was given")
        if problem.validation_scales and not settings.scale:
            raise UsageError("scoring steps at other lambdas needs a training scale other than 0 (--scale)")

        from orthoxfer.evaluation import accuracy  # reads the datasets' module: not when the CLI starts

        validate = Validator(  # per scope: a task alone, or joint: the mean over every task
            lambda: lambda s: accuracy.pool_accuracy(step.carrying(s), problem.validation, step.device),
            problem.validation_scales or (settings.scale,),
        )

    selection = run_steps(step, list(problem.tasks.values()), settings, run, problem.scope, validate)
    with torch.no_grad():
        final: list[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
        parts = step.factored_parts
        if parts is not None and all(p.base is None for p in parts):  # U = I + L R^T: keep the factors
            final = [
                (left.detach().float().cpu(), right.detach().float().cpu())
                for left, right in (p.factors() for p in parts)
            ]
        else:
            final = [s.detach().float().cpu() for s in step.module()]
    return Solution(final, steps=settings.steps, record={} if selection is None else {"selection": selection.record()})
