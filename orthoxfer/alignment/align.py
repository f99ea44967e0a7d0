"""``align``: a problem and its settings in, an :class:`~orthoxfer.alignment.artifact.Alignment` out."""

from __future__ import annotations

import torch

from orthoxfer.alignment.artifact import Alignment, LowRankU
from orthoxfer.evaluation.diagnostics import aggregate_by_scope
from orthoxfer.problem.align_problem import AlignProblem, group_sites
from orthoxfer.strategies.base import Strategy
from orthoxfer.strategies.procrustes import ProcrustesStrategy
from orthoxfer.strategies.registry import STRATEGIES, strategy_class
from orthoxfer.strategies.settings import AlignSettings


def align(problem: AlignProblem, settings: AlignSettings, run=None) -> Alignment:
    """Find the U's of every site for ``problem`` with ``settings.method``.

    ``mode=joint`` fits one set of U's for the sum of all task vectors on all tasks'
    few-shot data, datasets cycled (the reference code); ``mode=per-task`` fits one
    set per task on that task's vector and data only (the paper's text), so each
    task vector stays a module of its own.
    """
    strategy = strategy_class(settings.method)()
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
    used = {k: v for k, v in settings.to_dict().items() if k not in options_unused(strategy, settings)}
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
    alignment.meta["diagnostics"] = aggregate_by_scope(alignment, problem.restricted_vectors(names))
    return alignment


def options_unused(strategy: Strategy, settings: AlignSettings) -> set[str]:
    """Options of other strategies; recorded only where they mattered (procrustes' own also under init=procrustes)."""
    declared = {o.name for cls in STRATEGIES.values() for o in cls.options}
    start = ProcrustesStrategy.options if settings.init == "procrustes" else ()
    return declared - {o.name for o in strategy.options} - {o.name for o in start}
