"""Closed-form U from the two models' inputs to each site (orthogonal Procrustes).

With ``h_S = U h_T`` the best orthogonal U over the few-shot images minimises
``||X_T U^T - X_S||_F`` (rows are tokens). With ``M = X_T^T X_S = P S Q^T`` the
minimiser is ``U^T = P Q^T`` (scipy's ``orthogonal_procrustes(X_T, X_S)``), so
``U = Q P^T``: the polar factor, exact, in O(d) (reflections included). Tied sites
sum their cross-covariances before the SVD. Also the ``init=procrustes`` of every
trained strategy.
"""

from __future__ import annotations

import torch

from orthoxfer.align.base import ScopedProblem, SiteGroup, Solution, Strategy, require_source
from orthoxfer.align.linalg import factorisation_threads
from orthoxfer.align.settings import AlignSettings
from orthoxfer.capture import cross_covariance


def polar_transform(m: torch.Tensor) -> torch.Tensor:
    """U = Q P^T for M = P S Q^T: the orthogonal U with X_S ~ X_T U^T, given M = X_T^T X_S.

    The SVD runs single-threaded on CPU: MKL's threaded SVD of 48 x 768 x 768 took 549 s
    instead of 11 s on 2 shared cores (see :mod:`orthoxfer.align.linalg`).
    """
    with factorisation_threads(m):
        p, _, qt = torch.linalg.svd(m)
    return qt.transpose(-1, -2) @ p.transpose(-1, -2)


def procrustes_stacks(problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings) -> list[torch.Tensor]:
    source = require_source(problem, "procrustes")
    device = torch.device(settings.device)
    target, source = problem.target.to(device), source.to(device)
    batches = []
    for task in problem.tasks.values():
        for chunk in torch.arange(len(task.labels)).split(settings.batch_size):
            batches.append(task.batch(chunk, augment=False)[0].to(device))
    cov = cross_covariance(target, source, problem.sites, batches)
    stacks = []
    for group in groups:
        per_key = torch.zeros(len(group.keys), group.dim, group.dim, dtype=torch.float64, device=device)
        per_key.index_add_(0, group.index.to(device), torch.stack([cov[s.name] for s in group.sites]))
        stacks.append(polar_transform(per_key).float().cpu())
    return stacks


class ProcrustesStrategy(Strategy):
    name = "procrustes"
    exact = True

    def solve(self, problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings, run) -> Solution:
        return Solution(procrustes_stacks(problem, groups, settings))
