"""What one alignment solves: a target, source task vectors, few-shot tasks, the sites and how they are grouped.

:class:`AlignProblem` is what a user hands to :func:`orthoxfer.align`; each mode turns
it into :class:`ScopedProblem` s (one for the summed vectors, or one per task), and the
sites of one width become one :class:`SiteGroup` whose U's are fitted as one stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.vectors.sites import Site, find_sites, read_site
from orthoxfer.vectors.taskvector import TaskVector


@dataclass
class SiteGroup:
    """Sites of one width whose U's are stacked into one (n_keys, d, d) tensor.

    ``index[i]`` is the row of the stack that site ``i`` uses: the identity for
    ``tie=site``, shared rows when sites are tied.
    """

    dim: int
    sites: list[Site]
    keys: list[str]
    index: torch.Tensor

    @property
    def tied(self) -> bool:
        return len(self.keys) != len(self.sites)


def tie_key(site: Site, tie: str, dim_suffix: str) -> str:
    if tie == "site":
        return site.name
    if tie == "block":
        return site.block
    return "model" + dim_suffix


def group_sites(sites: list[Site], tie: str) -> list[SiteGroup]:
    """Group sites by width (each width gets its own stack) and map them to tie keys."""
    dims = list(dict.fromkeys(s.dim for s in sites))
    groups = []
    for d in dims:
        members = [s for s in sites if s.dim == d]
        suffix = f"@{d}" if len(dims) > 1 else ""
        keys = list(dict.fromkeys(tie_key(s, tie, suffix) for s in members))
        position = {k: i for i, k in enumerate(keys)}
        index = torch.tensor([position[tie_key(s, tie, suffix)] for s in members])
        groups.append(SiteGroup(d, members, keys, index))
    return groups


@dataclass
class ScopedProblem:
    """What one set of U's is fitted on: a target, one (possibly summed) vector, its tasks.

    ``shared``: every process of a torchrun launch fits these U's together, each on its
    part of every batch (the joint problem); otherwise one process fits them alone.
    """

    scope: str
    target: nn.Module
    vector: TaskVector
    tasks: dict[str, FewShotTask]
    sites: list[Site]
    source: nn.Module | None = None
    shared: bool = False
    validation: dict[str, FewShotTask] = field(
        default_factory=dict
    )  # held out from ``tasks``: where the step is chosen
    validation_scales: tuple[float, ...] = ()  # lambdas a step is scored at (its best counts); (): the training scale


@dataclass
class AlignProblem:
    """Everything a strategy may use: target, source task vectors by name, few-shot tasks, source model.

    In ``per-task`` mode the vectors are keyed by task name; in ``joint`` mode they are summed.
    ``validation`` (task -> held-out data, never the few-shot pools themselves) is where
    ``select_every`` scores the U's: a task's scope sees its own, ``joint`` all of them.
    ``validation_scales``: the lambdas each scored step is tried at, its best counting (the grid lambda is chosen on
    afterwards, so that step and lambda are chosen together); empty: the training scale alone.
    """

    target: nn.Module
    vectors: dict[str, TaskVector]
    tasks: dict[str, FewShotTask]
    source: nn.Module | None = None
    validation: dict[str, FewShotTask] | None = None
    validation_scales: tuple[float, ...] = ()

    def aligned_sites(self, selector: str) -> list[Site]:
        """The target's sites that the vectors carry and ``selector`` picks, after checking both are sane."""
        if not self.vectors:
            raise UsageError("no task vector given; pass --task-vector")
        if not self.tasks:
            raise UsageError("no few-shot task given; pass --tasks")
        first = next(iter(self.vectors.values()))
        for name, tv in self.vectors.items():
            tv.check_finite()
            if tv.sites != first.sites:
                raise UsageError(
                    f"task vector {name!r} has other sites than {next(iter(self.vectors))!r}; align them separately"
                )
        model_sites = first.check_fits(self.target)
        for site in model_sites:
            if not torch.isfinite(read_site(self.target, site)).all():
                raise OrthoxferError(
                    f"the target model has NaN or Inf weights at site {site.name}; check the checkpoint"
                )
        selected = {s.name for s in find_sites(self.target, selector)}
        sites = [s for s in model_sites if s.name in selected]
        if not sites:
            raise UsageError(f"--sites {selector!r} selects none of the task vector's sites (e.g. {first.sites[0]!r})")
        return sites

    def restricted_vectors(self, names: list[str]) -> dict[str, TaskVector]:
        return {k: tv.select(names) for k, tv in self.vectors.items()}

    def scoped(self, mode: str, sites: list[Site]) -> list[ScopedProblem]:
        vectors = self.restricted_vectors([s.name for s in sites])
        validation = self.validation or {}
        unknown = [t for t in validation if t not in self.tasks]
        if unknown:
            raise UsageError(
                f"validation data for {unknown[0]!r}, which is not among the tasks ({', '.join(self.tasks)})"
            )
        if mode == "joint":
            return [
                ScopedProblem(
                    "joint",
                    self.target,
                    TaskVector.sum(vectors.values()),
                    self.tasks,
                    sites,
                    self.source,
                    shared=True,
                    validation=dict(validation),
                    validation_scales=self.validation_scales,
                )
            ]
        missing = [t for t in self.tasks if t not in vectors]
        if missing:
            raise UsageError(
                f"per-task mode needs a task vector named after each task; none for {missing[0]!r} "
                f"(vectors: {', '.join(vectors)})"
            )
        return [
            ScopedProblem(
                t,
                self.target,
                vectors[t],
                {t: task},
                sites,
                self.source,
                validation={t: validation[t]} if t in validation else {},
                validation_scales=self.validation_scales,
            )
            for t, task in self.tasks.items()
        ]
