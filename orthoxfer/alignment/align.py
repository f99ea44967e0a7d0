"""``align``: a problem and its settings in, an :class:`~orthoxfer.alignment.artifact.Alignment` out."""

from __future__ import annotations

import torch

from orthoxfer.alignment.artifact import Alignment, LowRankU
from orthoxfer.alignment.start import check_start, start_record
from orthoxfer.errors import UsageError
from orthoxfer.evaluation.diagnostics import aggregate_by_scope
from orthoxfer.fit import distributed
from orthoxfer.problem.align_problem import AlignProblem, group_sites
from orthoxfer.strategies.base import Strategy
from orthoxfer.strategies.procrustes import ProcrustesStrategy
from orthoxfer.strategies.registry import declared_options, strategy_class
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.vectors.sites import require_square


def align(problem: AlignProblem, settings: AlignSettings, run=None) -> Alignment:
    """Find the U's of every site for ``problem`` with ``settings.method``.

    ``mode=joint`` fits one set of U's for the sum of all task vectors on all tasks'
    few-shot data, datasets cycled (the reference code); ``mode=per-task`` fits one
    set per task on that task's vector and data only (the paper's text), so each
    task vector stays a module of its own. Under torchrun the joint set is fitted by
    all processes together and the per-task sets are dealt out to them
    (:mod:`orthoxfer.fit.distributed`); every process returns the whole alignment.
    """
    strategy = strategy_class(settings.method)()
    for tv in problem.vectors.values():  # one d x d U per site: a rectangular site would be dropped or break a stack
        require_square({s: tv.shape(s) for s in tv.sites}, strategy.name)
    selects = settings.select_every and "select_every" in {o.name for o in strategy.options}
    missing = [t for t in problem.tasks if t not in (problem.validation or {})]
    if selects and missing:  # before any minutes are spent
        raise UsageError(f"--select-every needs validation data for every task; none for {missing[0]!r}")
    check_start(problem, settings)
    sites = problem.aligned_sites(settings.sites)
    groups = group_sites(sites, settings.tie)
    names = [s.name for s in sites]
    solved: dict[str, tuple[dict[str, torch.Tensor | LowRankU], dict]] = {}  # scope -> (its U's by key, its record)
    steps = 0
    scopes = problem.scoped(settings.mode, sites)
    for scoped in scopes if scopes[0].shared else distributed.spread(scopes, run):
        torch.manual_seed(settings.seed)
        solution = strategy.solve(scoped, groups, settings, run)
        steps = solution.steps
        solved[scoped.scope] = (
            {
                k: LowRankU(stack[0][i], stack[1][i]) if isinstance(stack, tuple) else stack[i]
                for g, stack in zip(groups, solution.stacks)
                for i, k in enumerate(g.keys)
            },
            solution.record,
        )
    if not scopes[0].shared:  # each process solved its own scopes: all of them, in the one-process order
        gathered = distributed.all_gather((solved, steps))
        found = {scope: s for part, _ in gathered for scope, s in part.items()}
        solved, steps = {s.scope: found[s.scope] for s in scopes}, max(n for _, n in gathered)
    transforms = {scope: t for scope, (t, _) in solved.items()}
    records: dict[str, dict] = {}
    for scope, (_, record) in solved.items():
        for name, value in record.items():
            records.setdefault(name, {})[scope] = value
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
        "start": start_record(problem, settings),
        **settings.extra,
        **records,
    }
    alignment = Alignment(transforms, keys, meta)
    alignment.meta["diagnostics"] = aggregate_by_scope(alignment, problem.restricted_vectors(names))
    return alignment


def options_unused(strategy: Strategy, settings: AlignSettings) -> set[str]:
    """Options of other strategies; recorded only where they mattered (procrustes' own also under init=procrustes)."""
    declared = set(declared_options())
    start = ProcrustesStrategy.options if settings.init == "procrustes" else ()
    return declared - {o.name for o in strategy.options} - {o.name for o in start}
