"""Trained strategies: U learned by gradient descent, in the spirit of ``torch.nn.utils.parametrize``.

A trained strategy says how U is parameterised (a small module whose ``forward``
returns the stacked U's), which optimiser moves it, and what it adds to the loss; the
shared step in :mod:`orthoxfer.fit.align_step` does batching, the materialised forward,
schedules, clipping, logging, checkpoints and resume. Every trained strategy may start
at the closed form (``init=procrustes``) or from what a transfer carried
(:mod:`orthoxfer.alignment.start`), move inside a low-rank family (:data:`ROTATION_RANK`),
stay near its start (:data:`ANCHOR`, a prior: few labelled images should move U only
as far as they must) and return the U's of the step that scored best on validation
(:data:`SELECT_EVERY`, early stopping; :mod:`orthoxfer.fit.select`).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.fit.align_step import train_transforms
from orthoxfer.fit.loop import adamw
from orthoxfer.problem.align_problem import ScopedProblem, SiteGroup
from orthoxfer.strategies.base import Solution, Strategy
from orthoxfer.strategies.options import Option
from orthoxfer.strategies.procrustes import procrustes_fit

if TYPE_CHECKING:
    from orthoxfer.fit.align_step import Transforms
    from orthoxfer.strategies.settings import AlignSettings

ROTATION_RANK = Option(
    "rotation_rank",
    0,
    "k > 0: each trained U moves away from its start only inside a rank-k family (O(dk) numbers "
    "instead of d^2); 0: a full U.",
    minimum=0,
)
ANCHOR = Option(
    "anchor",
    0.0,
    "beta >= 0: adds beta * sum ||U - U0||_F^2 over every U, keeping U near its start U0 (identity, procrustes, "
    "or the vector a transfer carried); inf: U stays at U0 (no training); 0: off.",
    minimum=0,
)
SELECT_EVERY = Option(
    "select_every",
    0,
    "k > 0: score the validation data at the start, every k steps and at the last step, and keep the U's "
    "that scored best (ties: the earliest step); 0: keep the last step's U's.",
    minimum=0,
)
TRAINED_OPTIONS = (ROTATION_RANK, ANCHOR, SELECT_EVERY)  # what every trained strategy declares besides its own


class TrainedStrategy(Strategy):
    """U learned by gradient descent on cross-entropy of the target carrying ``scale * U^T dW U``."""

    fits_similarity = True

    @abstractmethod
    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        """A module whose ``forward()`` returns the (n, d, d) U stack, starting at ``init``."""

    def optimiser(self, module: nn.Module, settings: AlignSettings) -> torch.optim.Optimizer:
        return adamw(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def regulariser(self, transforms: Transforms, settings: AlignSettings) -> torch.Tensor | None:
        """A term added to the loss (the penalty strategy's orthogonality penalty); none by default.

        ``transforms`` (:class:`orthoxfer.fit.align_step.Transforms`) gives the U stacks or their
        orthogonality errors, each computed only when asked for (from factors where cheaper).
        """
        return None

    def anchoring(self, transforms: Transforms, settings: AlignSettings) -> torch.Tensor | None:
        """``anchor * sum ||U - U0||_F^2`` over every U (a prior at the start); None when off, so the step is unchanged."""
        if not settings.anchor:
            return None
        return settings.anchor * torch.cat(transforms.start_distances()).sum()

    def solve(self, problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings, run) -> Solution:
        init, record = initial_stacks(problem, groups, settings)
        if math.isinf(settings.anchor):  # the limit of an ever stronger anchor: the start itself, exactly
            return Solution(init, steps=0, record={**record, "frozen": True})
        solution = train_transforms(self, problem, groups, init, settings, run)
        solution.record.update(record)
        return solution


def identity_stacks(groups: list[SiteGroup]) -> list[torch.Tensor]:
    return [torch.eye(g.dim).expand(len(g.keys), g.dim, g.dim).clone() for g in groups]


def initial_stacks(
    problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings
) -> tuple[list[torch.Tensor], dict]:
    """The start U0 of every group, and what to record about it (procrustes' identified ranks)."""
    if settings.init == "procrustes":
        return procrustes_fit(problem, groups, settings)
    return identity_stacks(groups), {}


def rotation_rank(settings: AlignSettings, dim: int) -> int:
    """``settings.rotation_rank`` once checked against the width ``dim`` of the sites it rotates."""
    k = settings.rotation_rank
    if k >= dim:
        raise UsageError(
            f"--rotation-rank {k} must be < {dim}, the width of the sites; pass a smaller rank, or 0 for a full U"
        )
    return k
