"""The strategy interface: one problem in, one stack of U's per site group out.

A strategy only says how U is found. Trained strategies say even less, in the spirit
of ``torch.nn.utils.parametrize``: how U is parameterised (a small module whose
``forward`` returns the stacked U's), which optimiser moves it, and what it adds to
the loss. The shared loop in :mod:`orthoxfer.align.loop` does the rest, so a new
strategy is one file and one entry in :data:`orthoxfer.align.STRATEGIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from orthoxfer.align.linalg import gram_residual
from orthoxfer.align.settings import AlignSettings
from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.problem import FewShotTask
from orthoxfer.sites import Site, find_sites, read_site
from orthoxfer.taskvector import TaskVector
from orthoxfer.training import adamw

if TYPE_CHECKING:
    from orthoxfer.align.loop import Transforms


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
    """What one set of U's is fitted on: a target, one (possibly summed) vector, its tasks."""

    scope: str
    target: nn.Module
    vector: TaskVector
    tasks: dict[str, FewShotTask]
    sites: list[Site]
    source: nn.Module | None = None


@dataclass
class Solution:
    """Per group, the fitted U stack (or, for ``U = I + L R^T``, the stacks of L and R); plus anything to record."""

    stacks: list[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
    steps: int = 0
    record: dict = field(default_factory=dict)


@dataclass
class AlignProblem:
    """Everything a strategy may use: target, source task vectors by name, few-shot tasks, source model.

    In ``per-task`` mode the vectors are keyed by task name; in ``joint`` mode they are summed.
    """

    target: nn.Module
    vectors: dict[str, TaskVector]
    tasks: dict[str, FewShotTask]
    source: nn.Module | None = None

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
                raise UsageError(f"task vector {name!r} has other sites than {next(iter(self.vectors))!r}; align them separately")
        model_sites = first.check_fits(self.target)
        for site in model_sites:
            if not torch.isfinite(read_site(self.target, site)).all():
                raise OrthoxferError(f"the target model has NaN or Inf weights at site {site.name}; check the checkpoint")
        selected = {s.name for s in find_sites(self.target, selector)}
        sites = [s for s in model_sites if s.name in selected]
        if not sites:
            raise UsageError(f"--sites {selector!r} selects none of the task vector's sites (e.g. {first.sites[0]!r})")
        return sites

    def restricted_vectors(self, names: list[str]) -> dict[str, TaskVector]:
        return {k: tv.select(names) for k, tv in self.vectors.items()}

    def scoped(self, mode: str, sites: list[Site]) -> list[ScopedProblem]:
        vectors = self.restricted_vectors([s.name for s in sites])
        if mode == "joint":
            return [ScopedProblem("joint", self.target, sum(vectors.values()), self.tasks, sites, self.source)]
        missing = [t for t in self.tasks if t not in vectors]
        if missing:
            raise UsageError(
                f"per-task mode needs a task vector named after each task; none for {missing[0]!r} "
                f"(vectors: {', '.join(vectors)})"
            )
        return [
            ScopedProblem(t, self.target, vectors[t], {t: task}, sites, self.source) for t, task in self.tasks.items()
        ]


class Strategy(ABC):
    """How the U's of a problem are found."""

    name: ClassVar[str]
    exact: ClassVar[bool]  # U is orthogonal to float precision at every step
    uses: ClassVar[tuple[str, ...]] = ()  # the strategy-specific settings it reads

    @abstractmethod
    def solve(self, problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings, run) -> Solution:
        """Fit the U stacks; ``run`` (a :class:`~orthoxfer.runs.Run` or None) receives metrics and checkpoints."""


class TrainedStrategy(Strategy):
    """U learned by gradient descent on cross-entropy of the target carrying ``scale * U^T dW U``."""

    @abstractmethod
    def parameterise(self, init: torch.Tensor, settings: AlignSettings) -> nn.Module:
        """A module whose ``forward()`` returns the (n, d, d) U stack, starting at ``init``."""

    def optimiser(self, module: nn.Module, settings: AlignSettings) -> torch.optim.Optimizer:
        return adamw(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def regulariser(self, transforms: Transforms, settings: AlignSettings) -> torch.Tensor | None:
        """A term added to the loss (the penalty strategy's orthogonality penalty); none by default.

        ``transforms`` (:class:`orthoxfer.align.loop.Transforms`) gives the U stacks or their
        orthogonality errors, each computed only when asked for (from factors where cheaper).
        """
        return None

    def solve(self, problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings, run) -> Solution:
        from orthoxfer.align.loop import train_transforms

        init, record = initial_stacks(problem, groups, settings)
        solution = train_transforms(self, problem, groups, init, settings, run)
        solution.record.update(record)
        return solution


def identity_stacks(groups: list[SiteGroup]) -> list[torch.Tensor]:
    return [torch.eye(g.dim).expand(len(g.keys), g.dim, g.dim).clone() for g in groups]


def initial_stacks(problem: ScopedProblem, groups: list[SiteGroup], settings: AlignSettings) -> tuple[list[torch.Tensor], dict]:
    """The start U0 of every group, and what to record about it (procrustes' identified ranks)."""
    if settings.init == "procrustes":
        from orthoxfer.align.procrustes import procrustes_fit

        return procrustes_fit(problem, groups, settings)
    return identity_stacks(groups), {}


def orthogonality_error(stack: torch.Tensor) -> torch.Tensor:
    """||U^T U - I||_F per U of a stack, in float32 or better; differentiable at the cost of one extra matmul."""
    u = stack.float() if stack.dtype in (torch.float16, torch.bfloat16) else stack
    return torch.linalg.matrix_norm(gram_residual(u))


def require_source(problem: ScopedProblem, what: str) -> nn.Module:
    if problem.source is None:
        raise UsageError(f"{what} needs the source model's activations: pass --source")
    return problem.source
