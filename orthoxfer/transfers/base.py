"""The transfer interface: a source task vector and the two models (and maybe data) in, a transferred vector out.

An alignment strategy finds U's from a problem; a transfer method is any other rule
that turns a source vector into one for the target (GradFix's gradient-sign mask, the
orthogonal-shift projection). Each declares what it needs (labelled few-shot data,
unlabelled images, or nothing), so a table can show what each row was allowed to see,
and its own settings as :class:`~orthoxfer.strategies.options.Option` s, as strategies do.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.strategies.options import Option
from orthoxfer.vectors.sites import Site, read_site
from orthoxfer.vectors.taskvector import TaskVector

NEEDS = ("labels", "images", "none")  # labelled few-shot pools | unlabelled images | no data at all
Pools = dict[str, FewShotTask] | None  # the target's few-shot training parts by task, or none for a data-free method


@dataclass
class TransferSettings:
    """The seed, the device, and every declared transfer option (readable like a field: ``settings.gradfix_shots``)."""

    seed: int = 0
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")


@dataclass
class Transferred:
    """The transferred vector, what the method learnt to get it (masks, permutations ...), and its diagnostics."""

    vector: TaskVector
    learnt: dict[str, torch.Tensor] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)


class Transfer(ABC):
    """One way to carry a source task vector into the target."""

    name: ClassVar[str]
    needs: ClassVar[str]  # one of NEEDS
    options: ClassVar[tuple[Option, ...]] = ()
    rectangular: ClassVar[bool] = False  # it carries rectangular sites (MLP weights); else they are refused in one line

    @abstractmethod
    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        """The vector carried into ``target``; ``pools`` are the target's few-shot training parts (never validation or test)."""


def require_source(source: nn.Module | None, what: str) -> nn.Module:
    if source is None:
        raise UsageError(f"{what} needs the source model: pass --source")
    return source


def require_pools(
    pools: dict[str, FewShotTask] | None, what: str, data: str = "labelled few-shot pools"
) -> dict[str, FewShotTask]:
    if not pools:
        raise UsageError(f"{what} needs the target's {data}")
    return pools


class ActivationInputs(NamedTuple):
    """What a transport that reads both models' activations on the target's images needs, checked once."""

    source: nn.Module
    sites: list[Site]
    device: torch.device
    pools: dict[str, FewShotTask]


def activation_inputs(
    what: str, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
) -> ActivationInputs:
    """The source, the vector's sites (checked against both models), the device and the pools' images, or a
    one-line UsageError naming what is missing."""
    source = require_source(source, what)
    sites = vector.check_fits(target)
    vector.check_fits(source)
    images = require_pools(pools, what, "images (the pools' images; their labels are not read)")
    return ActivationInputs(source, sites, torch.device(settings.device), images)


def model_tensors(model: nn.Module, vector: TaskVector) -> TaskVector:
    """The model's own values where ``vector`` lives (its sites' rows, its ``extra`` parameters), detached.

    As a :class:`TaskVector`, so the base shift is ``model_tensors(target) - model_tensors(source)``.
    """
    sites = vector.check_fits(model)
    dense = {s.name: read_site(model, s).detach() for s in sites}
    return TaskVector(dense, extra={n: model.get_parameter(n).detach() for n in vector.extra})


def per_tensor(fn: Callable[..., torch.Tensor], first: TaskVector, *others: TaskVector) -> TaskVector:
    """A dense vector of ``fn(t, *o)`` over every tensor ``first`` carries (sites, then ``extra``), ``first``'s meta kept.

    ``others`` are dense vectors on the same sites and extras; LoRA ``first`` is densified,
    since what a transfer method changes is each entry of dW.
    """
    dense = {s: fn(first.delta(s), *(o.dense[s] for o in others)) for s in first.sites}
    extra = {n: fn(t, *(o.extra[n] for o in others)) for n, t in first.extra.items()}
    return TaskVector(dense, extra=extra, meta=dict(first.meta, kind="dense", rank=None))


def norm_ratio(result: TaskVector, vector: TaskVector) -> float:
    """||result|| / ||vector|| over every tensor both carry (Frobenius over sites and ``extra``): how much survived."""

    def total(tv: TaskVector) -> float:
        return math.sqrt(
            sum(n * n for n in tv.norms().values()) + sum(float(t.double().norm()) ** 2 for t in tv.extra.values())
        )

    before = total(vector)
    return total(result) / before if before > 0 else math.nan
