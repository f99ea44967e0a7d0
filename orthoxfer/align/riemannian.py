"""U is a point of the Stiefel manifold, moved by geoopt's Riemannian Adam.

Each step is a Riemannian Adam step followed by a retraction back onto the manifold,
so U is orthogonal to float precision after every step. ``retraction``: ``qr``
(geoopt ``EuclideanStiefel``) or ``cayley`` (geoopt ``CanonicalStiefel``).

Both manifolds keep geoopt's maths and replace only how its factorisations are computed
(see :mod:`orthoxfer.align.linalg`): the QR retraction as Cholesky-QR, the Cayley
retraction's solve with ``I - A/2`` (A skew) as one single-threaded inverse instead of a
multi-threaded batched LU solve, which hangs on CPU at 768 x 768.
"""

from __future__ import annotations

import geoopt
import torch
from torch import nn

from orthoxfer.align.base import TrainedStrategy
from orthoxfer.align.linalg import cholesky_qr, inverse_identity_plus_skew
from orthoxfer.align.settings import AlignSettings


class QRStiefel(geoopt.EuclideanStiefel):
    """geoopt's ``EuclideanStiefel``; its QR retraction (Q with ``diag(R) > 0``) computed as Cholesky-QR."""

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return cholesky_qr(x + u)


class CayleyStiefel(geoopt.CanonicalStiefel):
    """geoopt's ``CanonicalStiefel``; the Cayley transform as ``(I - A/2)^-1 (I + A/2) = 2 (I - A/2)^-1 - I``.

    Overrides geoopt's private ``_transp_follow_one``, through which its ``retr``,
    ``retr_transp`` and ``transp_follow_retr`` all go; the tests compare this class with
    geoopt's own on matrices small enough for geoopt's LU.
    """

    def _transp_follow_one(self, x: torch.Tensor, v: torch.Tensor, *, u: torch.Tensor) -> torch.Tensor:
        ux = u @ x.mT  # A = u x^T - x u^T = ux - ux^T
        k = inverse_identity_plus_skew((ux.mT - ux).mul_(0.5))  # (I + S)^-1 with S = -A/2
        return torch.baddbmm(v, k, v, beta=-1, alpha=2)


MANIFOLDS = {"qr": QRStiefel, "cayley": CayleyStiefel}


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
