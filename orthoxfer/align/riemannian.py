"""U is a point of the Stiefel manifold, moved by geoopt's Riemannian Adam.

Each step is a Riemannian Adam step followed by a retraction back onto the manifold,
so U is orthogonal to float precision after every step. ``retraction``: ``qr``
(geoopt ``EuclideanStiefel``) or ``cayley`` (geoopt ``CanonicalStiefel``).
"""

from __future__ import annotations

import geoopt
import torch
from torch import nn

from orthoxfer.align.base import TrainedStrategy
from orthoxfer.align.settings import AlignSettings

MANIFOLDS = {"qr": geoopt.EuclideanStiefel, "cayley": geoopt.CanonicalStiefel}


class StiefelPoint(nn.Module):
    def __init__(self, init: torch.Tensor, retraction: str) -> None:
        super().__init__()
        self.u = geoopt.ManifoldParameter(init.float().clone(), manifold=MANIFOLDS[retraction]())

    def forward(self) -> torch.Tensor:
        return self.u


class RiemannianStrategy(TrainedStrategy):
    name = "riemannian"
    exact = True
    uses = ("retraction",)

    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        return StiefelPoint(init, settings.retraction)

    def optimiser(self, module: nn.Module, settings: AlignSettings) -> torch.optim.Optimizer:
        return geoopt.optim.RiemannianAdam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
