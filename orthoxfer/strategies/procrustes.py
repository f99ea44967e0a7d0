"""Closed-form U from the two models' inputs to each site (orthogonal Procrustes).

With ``h_S = U h_T`` the best orthogonal U over the few-shot images minimises
``||X_T U^T - X_S||_F`` (rows are tokens). With ``M = X_T^T X_S = P S Q^T`` the
minimiser is ``U^T = P Q^T`` (scipy's ``orthogonal_procrustes(X_T, X_S)``), so
``U = Q P^T``: the polar factor, exact, in O(d) (reflections included). Tied sites
sum their cross-covariances before the SVD. Also the ``init=procrustes`` of every
trained strategy.

**Where the data leaves U free.** The polar factor is unique only where M has full
rank. Every q/k/v site of a CLIP tower reads LayerNorm outputs; with unit gains and zero
biases each token is centred, so the all-ones direction is an exact null direction of
M, and the SVD's choice there is whatever the LAPACK kernel picks: on one CPU U keeps
the all-ones direction, on another it reflects it. So the rule here is stated and the
same everywhere: singular values at or below ``rtol`` times the largest count as zero
(float32 activations carry about seven significant digits, so below the default 1e-6
a direction is decided by their rounding, not by the images), U maps the identified
subspace as the data says (``U p_i = q_i``), and on the rest it is the orthogonal map
between the two free subspaces closest to the start U0 (the identity for the closed
form and for ``init=procrustes``): ``R = polar(Q_n^T U0 P_n)``. That is unique whenever
``Q_n^T U0 P_n`` is invertible, which holds whenever the two free subspaces are not
orthogonal to each other under U0 (for centred inputs both are the all-ones direction,
and U keeps it). The identified rank and the condition of M are recorded per key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from orthoxfer.models.modes import evaluating
from orthoxfer.problem.align_problem import ScopedProblem, SiteGroup
from orthoxfer.problem.capture import cross_covariance
from orthoxfer.problem.tasks import pool_images
from orthoxfer.strategies.base import Solution, Strategy, require_source
from orthoxfer.strategies.linalg import factorisation_threads
from orthoxfer.strategies.options import Option

if TYPE_CHECKING:
    from orthoxfer.strategies.settings import AlignSettings


PROCRUSTES_RTOL = Option(
    "procrustes_rtol",
    1e-6,
    "procrustes (and init=procrustes): singular values of the cross-covariance at or below "
    "this times the largest leave U free there; U is then completed by the map closest to I.",
    minimum=0,
)


@dataclass
class PolarFit:
    """The U stack of a closed-form fit and how much of each U the data decided."""

    transforms: torch.Tensor  # (n, d, d)
    rank: list[int]  # singular values of M above rtol * largest: the identified dimensions
    condition: list[float]  # largest / smallest singular value of M (inf where M is singular)

    def record(self, keys: list[str]) -> dict[str, dict[str, float | int | None]]:
        """``{key: {identified_rank, dim, condition}}`` as JSON values (an infinite condition is None)."""
        dim = self.transforms.shape[-1]
        return {
            k: {"identified_rank": r, "dim": dim, "condition": c if math.isfinite(c) else None}
            for k, r, c in zip(keys, self.rank, self.condition)
        }


def polar_transform(m: torch.Tensor, rtol: float = 1e-6, start: torch.Tensor | None = None) -> PolarFit:
    """U = Q P^T for each M = P S Q^T of a stack (n, d, d) on the subspace M identifies, completed toward ``start`` (I by default).

    The SVDs run single-threaded on CPU: MKL's threaded SVD of 48 x 768 x 768 took 549 s
    instead of 11 s on 2 shared cores (see :mod:`orthoxfer.strategies.linalg`). The completion
    costs a second SVD, only for the matrices that have a free direction.
    """
    with factorisation_threads(m):
        p, s, qt = torch.linalg.svd(m)
    u = qt.mT @ p.mT
    free = s <= rtol * s[..., :1]
    partial = free.any(-1).nonzero().flatten()
    if len(partial):
        u[partial] = complete(p[partial], qt[partial].mT, free[partial], None if start is None else start[partial])
    smallest = s[..., -1]
    condition = torch.where(smallest > 0, s[..., 0] / smallest.clamp_min(torch.finfo(s.dtype).tiny), math.inf)
    return PolarFit(u, (~free).sum(-1).tolist(), condition.tolist())


def complete(p: torch.Tensor, q: torch.Tensor, free: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
    """``Q R P^T`` with ``R = I`` on the identified columns and ``polar(Q_n^T U0 P_n)`` on the free ones.

    The free block is embedded in a matrix that is the identity on the identified block,
    so one batched SVD serves matrices of every identified rank: the polar factor of a
    block-diagonal matrix is block-diagonal.
    """
    eye = torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)
    u0 = eye if start is None else start.to(p.dtype)
    both = free.unsqueeze(-1) & free.unsqueeze(-2)
    n = torch.where(both, q.mT @ u0 @ p, 0.0) + torch.diag_embed((~free).to(p.dtype))
    with factorisation_threads(n):
        a, _, bt = torch.linalg.svd(n)
    return q @ (a @ bt) @ p.mT


def procrustes_fit(
    problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings
) -> tuple[list[torch.Tensor], dict]:
    """The U stack of every group and ``{key: identification}`` (see :class:`PolarFit`)."""
    source = require_source(problem, "procrustes")
    device = torch.device(settings.device)
    target = problem.target
    batches = pool_images(problem.tasks.values(), settings.batch_size, device)
    with evaluating(target, source, device=device):  # activations as the aligned model will produce them
        cov = cross_covariance(target, source, problem.sites, batches)
    stacks, record = [], {}
    for group in groups:
        per_key = torch.zeros(len(group.keys), group.dim, group.dim, dtype=torch.float64, device=device)
        per_key.index_add_(0, group.index.to(device), torch.stack([cov[s.name] for s in group.sites]))
        fit = polar_transform(per_key, settings.procrustes_rtol)
        stacks.append(fit.transforms.float().cpu())
        record.update(fit.record(group.keys))
    return stacks, {"identification": record}


class ProcrustesStrategy(Strategy):
    name = "procrustes"
    exact = True
    needs = "images"  # the two models' activations on the pools' images; labels are never read
    options = (PROCRUSTES_RTOL,)

    def solve(self, problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings, run) -> Solution:
        stacks, record = procrustes_fit(problem, groups, settings)
        return Solution(stacks, record=record)
