"""U is a point of the Stiefel manifold, moved by geoopt's Riemannian Adam.

Each step is a Riemannian Adam step followed by a retraction back onto the manifold,
so U is orthogonal to float precision after every step. ``retraction``: ``qr``
(geoopt ``EuclideanStiefel``) or ``cayley`` (geoopt ``CanonicalStiefel``).

Both manifolds keep geoopt's maths and replace only how its factorisations are computed
(see :mod:`orthoxfer.strategies.linalg`): the QR retraction as Cholesky-QR, the Cayley
retraction's solve with ``I - A/2`` (A skew) as one single-threaded inverse instead of a
multi-threaded batched LU solve, which hangs on CPU at 768 x 768 (for a tall d x k point,
2k < d, by Woodbury: a 2k x 2k solve, no d x d matrix).

With ``rotation_rank = k > 0``, ``U = U0 (I + Q (R - I) Q^T)`` with Q on St(d, k) (random
orthonormal start) and R on St(k, k) = O(k) (start I): for orthonormal Q and orthogonal R,
``(I + Q(R - I)Q^T)^T (I + Q(R - I)Q^T) = I + Q (R^T R - I) Q^T = I``, so U stays exactly
orthogonal and ``U - U0`` has rank <= k: R rotates the k-dim subspace Q spans, and Q moves
it. At R = I, Q gets no gradient at first; R does, and then Q follows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import geoopt
import torch
from torch import nn

from orthoxfer.strategies.linalg import cayley_lowrank_apply, cholesky_qr, inverse_identity_plus_skew, is_identity_stack
from orthoxfer.strategies.options import Option
from orthoxfer.strategies.trained import TRAINED_OPTIONS, TrainedStrategy, rotation_rank

if TYPE_CHECKING:
    from orthoxfer.strategies.settings import AlignSettings


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
        if 2 * x.shape[-1] < x.shape[-2]:  # tall x: S = -A/2 = (x/2) u^T - u (x/2)^T has rank <= 2k
            return cayley_lowrank_apply(x * 0.5, u, v)
        ux = u @ x.mT  # A = u x^T - x u^T = ux - ux^T
        k = inverse_identity_plus_skew((ux.mT - ux).mul_(0.5))  # (I + S)^-1 with S = -A/2
        return torch.baddbmm(v, k, v, beta=-1, alpha=2)


MANIFOLDS = {"qr": QRStiefel, "cayley": CayleyStiefel}
RETRACTION = Option(
    "retraction",
    "qr",
    "qr (geoopt EuclideanStiefel) | cayley (CanonicalStiefel): how a step returns to the manifold.",
    choices=tuple(MANIFOLDS),
)


class StiefelPoint(nn.Module):
    def __init__(self, init: torch.Tensor, retraction: str) -> None:
        super().__init__()
        self.u = geoopt.ManifoldParameter(init.float().clone(), manifold=MANIFOLDS[retraction]())

    def forward(self) -> torch.Tensor:
        return self.u


class LowRankStiefel(nn.Module):
    """U = U0 (I + Q (R - I) Q^T), Q on St(d, k), R on O(k); forward builds the (n, d, d) stack in O(d^2 k)."""

    base: torch.Tensor | None  # a buffer; None when U0 = I

    def __init__(self, init: torch.Tensor, rank: int, retraction: str) -> None:
        super().__init__()
        init = init.float()
        n, d, _ = init.shape
        self.register_buffer("base", None if is_identity_stack(init) else init.clone())
        q, r = torch.linalg.qr(torch.randn(n, d, rank, dtype=torch.float64))  # the loop's seeded RNG, on CPU
        q = (q * torch.sign(torch.diagonal(r, 0, -2, -1)).unsqueeze(-2)).float()
        manifold = MANIFOLDS[retraction]
        self.q = geoopt.ManifoldParameter(q.to(init.device), manifold=manifold())
        self.r = geoopt.ManifoldParameter(
            torch.eye(rank, device=init.device).expand(n, rank, rank).clone(), manifold=manifold()
        )

    def forward(self) -> torch.Tensor:
        r = self.r.clone()
        r.diagonal(0, -2, -1).sub_(1)
        if self.base is None:
            u = (self.q @ r) @ self.q.mT
            u.diagonal(0, -2, -1).add_(1)
            return u
        return torch.baddbmm(self.base, (self.base @ self.q) @ r, self.q.mT)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``L, R`` with ``U = U0 (I + L R^T)``: ``L = Q``, ``R = Q (R - I)^T`` (the step rotates in O(d^2 k))."""
        r = self.r.clone()
        r.diagonal(0, -2, -1).sub_(1)
        return self.q, self.q @ r.mT


class RiemannianStrategy(TrainedStrategy):
    name = "riemannian"
    exact = True
    options = (RETRACTION, *TRAINED_OPTIONS)

    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        k = rotation_rank(settings, init.shape[-1])
        return LowRankStiefel(init, k, settings.retraction) if k else StiefelPoint(init, settings.retraction)

    def optimiser(self, module: nn.Module, settings: AlignSettings) -> torch.optim.Optimizer:
        """RiemannianAdam with ``lr`` read as a step per entry, as Adam's is.

        geoopt keeps one second moment per matrix (the squared norm of its whole
        Riemannian gradient), so a step moves a matrix by about ``lr`` in Frobenius norm,
        where Adam moves each of its entries by about ``lr``: at one nominal rate a
        128 x 128 U moved 1.0 against Adam's 128 (constant gradient, 100 steps at 1e-2).
        Scaling each parameter's rate by the square root of its matrices' size makes one
        ``lr`` mean the same step for every strategy, so a comparison at one rate compares
        the methods, not their optimisers' units.
        """
        groups = [
            {"params": [p], "lr": settings.lr * math.sqrt(p.shape[-2] * p.shape[-1])} for p in module.parameters()
        ]
        return geoopt.optim.RiemannianAdam(groups, lr=settings.lr, weight_decay=settings.weight_decay)
