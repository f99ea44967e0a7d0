"""The paper's strategy: U is a free matrix, pushed toward orthogonality by a penalty.

U is only approximately orthogonal, so the transferred vector's norm and rank can
drift; the diagnostics report by how much. ``penalty_form``:

- ``paper``: ``alpha * sum_l ||U_l^T U_l - I||_F^2`` (the paper's equation);
- ``reference``: ``alpha * mean_l ||U_l^T U_l - I||_F`` (what the released code does).
"""

from __future__ import annotations

import torch
from torch import nn

from orthoxfer.align.base import TrainedStrategy, orthogonality_error
from orthoxfer.align.settings import AlignSettings


class FreeMatrix(nn.Module):
    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        self.u = nn.Parameter(init.float().clone())

    def forward(self) -> torch.Tensor:
        return self.u


class PenaltyStrategy(TrainedStrategy):
    name = "penalty"
    exact = False
    uses = ("alpha", "penalty_form")

    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        return FreeMatrix(init)

    def regulariser(self, stacks: list[torch.Tensor], settings: AlignSettings) -> torch.Tensor:
        errors = torch.cat([orthogonality_error(s) for s in stacks])
        if settings.penalty_form == "paper":
            return settings.alpha * errors.square().sum()
        return settings.alpha * errors.mean()
