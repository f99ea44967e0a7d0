"""U = U0 (I - S)(I + S)^-1 with S = A - A^T skew-symmetric: exactly orthogonal, by construction.

AdamW moves the free matrix A. The Cayley map is a bijection from skew matrices onto
the rotations without eigenvalue -1, so from U0 = I it stays in SO(d): det U = +1 on
every step, and a reflection or an odd permutation (det -1) can never be reached.
That is a property of any path that starts at I and moves continuously (exp maps and
Riemannian steps from I alike); with ``init=procrustes`` U0 may already carry the
reflection, and the Cayley factor then rotates around it. The map is one inverse with a
hand-written backward (:func:`orthoxfer.align.linalg.cayley`).
"""

from __future__ import annotations

import torch
from torch import nn

from orthoxfer.align.base import TrainedStrategy
from orthoxfer.align.linalg import cayley
from orthoxfer.align.settings import AlignSettings


class CayleyMatrix(nn.Module):
    def __init__(self, init: torch.Tensor) -> None:
        super().__init__()
        init = init.float()
        eye = torch.eye(init.shape[-1], dtype=init.dtype, device=init.device)
        is_identity = bool(torch.equal(init, eye.expand_as(init)))
        self.register_buffer("base", None if is_identity else init.clone())  # U0 = I costs nothing per step
        self.a = nn.Parameter(torch.zeros_like(init))

    def forward(self) -> torch.Tensor:
        c = cayley(self.a)
        return c if self.base is None else self.base @ c


class CayleyStrategy(TrainedStrategy):
    name = "cayley"
    exact = True

    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        return CayleyMatrix(init)
