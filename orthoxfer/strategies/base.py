"""The strategy interface: one problem in, one stack of U's per site group out.

A strategy only says how U is found, and declares the settings of its own
(:class:`~orthoxfer.strategies.options.Option`); trained strategies say even less
(:mod:`orthoxfer.strategies.trained`). A new strategy is one file and one
:func:`~orthoxfer.strategies.registry.register` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.problem.align_problem import ScopedProblem, SiteGroup
from orthoxfer.strategies.options import Option

if TYPE_CHECKING:
    from orthoxfer.strategies.settings import AlignSettings


@dataclass
class Solution:
    """Per group, the fitted U stack (or, for ``U = I + L R^T``, the stacks of L and R); plus anything to record."""

    stacks: Sequence[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
    steps: int = 0
    record: dict = field(default_factory=dict)


class Strategy(ABC):
    """How the U's of a problem are found."""

    name: ClassVar[str]
    exact: ClassVar[bool]  # U is orthogonal to float precision at every step
    needs: ClassVar[str] = (
        "labels"  # what data it fits U on: labels (few-shot cross-entropy) | images (activations only)
    )
    options: ClassVar[tuple[Option, ...]] = ()  # the settings of its own (flags, TOML keys, recorded in artifacts)
    # it fits U in U^T dW U to the vector itself: a control in dW's orbit (Q^T dW Q) is undone at U = Q^T, so only
    # controls outside the orbit measure it (orthoxfer.vectors.controls.valid_controls)
    fits_similarity: ClassVar[bool] = False

    @abstractmethod
    def solve(self, problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings, run) -> Solution:
        """Fit the U stacks; ``run`` (a :class:`~orthoxfer.runs.Run` or None) receives metrics and checkpoints."""


def require_source(problem: ScopedProblem, what: str) -> nn.Module:
    if problem.source is None:
        raise UsageError(f"{what} needs the source model's activations: pass --source")
    return problem.source
