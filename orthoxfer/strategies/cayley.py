"""U = U0 (I - S)(I + S)^-1 with S = A - A^T skew-symmetric: exactly orthogonal, by construction.

AdamW moves the free matrix A. The Cayley map is a bijection from skew matrices onto
the rotations without eigenvalue -1, so from U0 = I it stays in SO(d): det U = +1 on
every step, and a reflection or an odd permutation (det -1) can never be reached.
That is a property of any path that starts at I and moves continuously (exp maps and
Riemannian steps from I alike); with ``init=procrustes`` U0 may already carry the
reflection, and the Cayley factor then rotates around it. The map is one inverse with a
hand-written backward (:func:`orthoxfer.strategies.linalg.cayley`).

With ``rotation_rank = k > 0``, ``S = A B^T - B A^T`` with A, B of shape (d, k): U moves
only inside a rank-2k family, and the Cayley map is a 2k x 2k solve by Woodbury
(:func:`orthoxfer.strategies.linalg.cayley_lowrank`), still exactly orthogonal. A starts small
and random, B at 0, so U starts at U0 and both get gradients (as in LoRA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from orthoxfer.strategies.linalg import cayley, cayley_lowrank, cayley_lowrank_factors, is_identity_stack
from orthoxfer.strategies.trained import TRAINED_OPTIONS, TrainedStrategy, rotation_rank

if TYPE_CHECKING:
    from orthoxfer.strategies.settings import AlignSettings


class CayleyMatrix(nn.Module):
    base: torch.Tensor | None  # a buffer; None when U0 = I

    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        init = init.float()
        self.register_buffer("base", None if is_identity_stack(init) else init.clone())  # U0 = I costs nothing per step
        self.a = nn.Parameter(torch.zeros_like(init))

    def forward(self) -> torch.Tensor:
        c = cayley(self.a)
        return c if self.base is None else self.base @ c


class LowRankCayley(nn.Module):
    """U = U0 C(A B^T - B A^T), A, B of shape (n, d, k); forward builds the (n, d, d) stack in O(d^2 k)."""

    base: torch.Tensor | None  # a buffer; None when U0 = I

    def __init__(self, init: torch.Tensor, rank: int) -> None:
        super().__init__()
        init = init.float()
        n, d, _ = init.shape
        self.register_buffer("base", None if is_identity_stack(init) else init.clone())
        a = torch.randn(n, d, rank) / d**0.5  # from the global RNG the loop seeds, drawn on CPU for any device
        self.a = nn.Parameter(a.to(init.device))
        self.b = nn.Parameter(torch.zeros(n, d, rank, device=init.device))

    def forward(self) -> torch.Tensor:
        return cayley_lowrank(self.a, self.b, self.base)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``L, R`` with ``U = U0 (I + L R^T)``: what the step needs to rotate a vector in O(d^2 k)."""
        return cayley_lowrank_factors(self.a, self.b)


class CayleyStrategy(TrainedStrategy):
    name = "cayley"
    exact = True
    options = TRAINED_OPTIONS

    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        k = rotation_rank(settings, init.shape[-1])
        return LowRankCayley(init, k) if k else CayleyMatrix(init)
