"""The paper's strategy: U is a free matrix, pushed toward orthogonality by a penalty.

U is only approximately orthogonal, so the transferred vector's norm and rank can
drift; the diagnostics report by how much. ``penalty_form``:

- ``paper``: ``alpha * sum_l ||U_l^T U_l - I||_F^2`` (the paper's equation);
- ``reference``: ``alpha * mean_l ||U_l^T U_l - I||_F`` (what the released code does).

With ``rotation_rank = k > 0``, ``U = U0 + A B^T`` (A, B of shape (d, k); A small and
random, B = 0, as in LoRA): free inside that family, with the same penalty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from orthoxfer.strategies.linalg import is_identity_stack
from orthoxfer.strategies.options import Option
from orthoxfer.strategies.trained import TRAINED_OPTIONS, TrainedStrategy, rotation_rank

if TYPE_CHECKING:
    from orthoxfer.strategies.settings import AlignSettings


ALPHA = Option("alpha", 1.0, "Orthogonality penalty weight.", minimum=0)
PENALTY_FORM = Option(
    "penalty_form",
    "paper",
    "paper: alpha * sum ||U^T U - I||_F^2 | reference: alpha * mean ||U^T U - I||_F (the released code).",
    choices=("paper", "reference"),
)


class FreeMatrix(nn.Module):
    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.u = nn.Parameter(init.float().clone())

    def forward(self) -> torch.Tensor:
        return self.u


class LowRankFree(nn.Module):
    """U = U0 + A B^T, A, B of shape (n, d, k); forward builds the (n, d, d) stack in O(d^2 k)."""

    base: torch.Tensor | None  # a buffer; None when U0 = I

    def __init__(self, init: torch.Tensor, rank: int) -> None:
        super().__init__()
        n, d, _ = init.shape
        init = init.float()
        self.register_buffer("base", None if is_identity_stack(init) else init.clone())
        self.a = nn.Parameter((torch.randn(n, d, rank) / d**0.5).to(init.device))  # the loop's seeded RNG, on CPU
        self.b = nn.Parameter(torch.zeros(n, d, rank, device=init.device))

    def forward(self) -> torch.Tensor:
        if self.base is not None:
            return torch.baddbmm(self.base, self.a, self.b.mT)
        u = self.a @ self.b.mT
        u.diagonal(0, -2, -1).add_(1)
        return u

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``L, R`` with ``U = U0 (I + L R^T)``: ``L = U0^T A``, ``R = B`` (U0, I or Procrustes, is orthogonal)."""
        return (self.a if self.base is None else self.base.mT @ self.a), self.b


class PenaltyStrategy(TrainedStrategy):
    name = "penalty"
    exact = False
    options = (ALPHA, PENALTY_FORM, *TRAINED_OPTIONS)

    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        k = rotation_rank(settings, init.shape[-1])
        return LowRankFree(init, k) if k else FreeMatrix(init)

    def regulariser(self, transforms, settings: AlignSettings) -> torch.Tensor:
        errors = torch.cat(transforms.orthogonality_errors())  # from the factors for a low-rank U
        if settings.penalty_form == "paper":
            return settings.alpha * errors.square().sum()
        return settings.alpha * errors.mean()
