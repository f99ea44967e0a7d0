"""Strategies for finding U, behind one interface. Adding one: a file and an entry below."""

from __future__ import annotations

import torch

from orthoxfer.align.base import AlignProblem, Strategy, group_sites
from orthoxfer.align.cayley import CayleyStrategy
from orthoxfer.align.penalty import PenaltyStrategy
from orthoxfer.align.procrustes import ProcrustesStrategy
from orthoxfer.align.riemannian import RiemannianStrategy
from orthoxfer.align.settings import AlignSettings
from orthoxfer.alignment import Alignment, LowRankU

STRATEGIES: dict[str, type[Strategy]] = {
    "penalty": PenaltyStrategy,
    "riemannian": RiemannianStrategy,
    "cayley": CayleyStrategy,
    "procrustes": ProcrustesStrategy,
}


def align(problem: AlignProblem, settings: AlignSettings, run=None) -> Alignment:
    """Find the U's of every site for ``problem`` with ``settings.method``.

    ``mode=joint`` fits one set of U's for the sum of all task vectors on all tasks'
    few-shot data, datasets cycled (the reference code); ``mode=per-task`` fits one
    set per task on that task's vector and data only (the paper's text), so each
    task vector stays a module of its own.
    """
    from orthoxfer.diagnostics import summarise

    strategy = STRATEGIES[settings.method]()
    sites = problem.aligned_sites(settings.sites)
    groups = group_sites(sites, settings.tie)
    names = [s.name for s in sites]
    transforms: dict[str, dict[str, torch.Tensor | LowRankU]] = {}
    steps = 0
    records: dict[str, dict] = {}
    for scoped in problem.scoped(settings.mode, sites):
        torch.manual_seed(settings.seed)
        solution = strategy.solve(scoped, groups, settings, run)
        steps = solution.steps
        for name, value in solution.record.items():
            records.setdefault(name, {})[scoped.scope] = value
        transforms[scoped.scope] = {
            k: LowRankU(stack[0][i], stack[1][i]) if isinstance(stack, tuple) else stack[i]
            for g, stack in zip(groups, solution.stacks)
            for i, k in enumerate(g.keys)
        }
    keys = {s.name: k for g in groups for s, k in zip(g.sites, (g.keys[i] for i in g.index.tolist()))}
    used = {k: v for k, v in settings.to_dict().items() if k not in strategy_fields_unused(strategy, settings)}
    meta = {
        "strategy": strategy.name,
        "exact": strategy.exact,
        "settings": used,
        "steps": steps,
        "seed": settings.seed,
        "sites": names,
        "tasks": list(problem.tasks),
        **settings.extra,
        **records,
    }
    alignment = Alignment(transforms, keys, meta)
    alignment.meta["diagnostics"] = summarise(alignment, problem.restricted_vectors(names))
    return alignment


def strategy_fields_unused(strategy: Strategy, settings: AlignSettings) -> set[str]:
    """Strategy-specific settings another strategy reads; recorded only where they mattered."""
    specific = {f for cls in STRATEGIES.values() for f in cls.uses}
    start = ProcrustesStrategy.uses if settings.init == "procrustes" else ()
    return specific - set(strategy.uses) - set(start)
