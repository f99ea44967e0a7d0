"""Task vectors: ``{site: dW}``, dense or LoRA-factored, with their provenance.

A LoRA vector keeps its factors (``dW = scale * B @ A``, B: d x r, A: r x d) so that
rotating it costs (U^T B)(A U) instead of two d x d x d products, and adding two LoRA
vectors stays factored (the factors are concatenated; ranks add). ``extra`` holds the
non-site parameter deltas of a ``full`` task vector: they are added unaligned.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthoxfer.artifacts import ArtifactError, load_artifact, save_artifact
from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.vectors.sites import Site, find_sites, matrix_shape, read_site, sites_by_name
from orthoxfer.version import __version__

KIND = "task_vector"


class MismatchError(OrthoxferError, ValueError):
    """A task vector and a model (or two vectors) whose sites or shapes differ."""


@dataclass
class TaskVector:
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # site -> (A, B)
    scale: float = 1.0  # LoRA only: dW = scale * B @ A
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dense and self.lora:
            raise ValueError("a task vector is either dense or LoRA-factored, not both")

    # ----------------------------------------------------------------- structure
    @property
    def kind(self) -> str:
        return "lora" if self.lora else "dense"

    @property
    def sites(self) -> list[str]:
        return list(self.lora if self.lora else self.dense)

    @property
    def rank(self) -> int | None:
        return max((a.shape[0] for a, _ in self.lora.values()), default=0) if self.lora else None

    def shape(self, site: str) -> tuple[int, int]:
        if self.lora:
            a, b = self.lora[site]
            return (b.shape[0], a.shape[1])
        return matrix_shape(self.dense[site])

    def delta(self, site: str) -> torch.Tensor:
        """The dense d x d update of one site."""
        if self.lora:
            a, b = self.lora[site]
            return self.scale * (b @ a)
        return self.dense[site]

    def select(self, sites: list[str]) -> TaskVector:
        """The same vector on a subset of its sites; non-site deltas are kept."""
        if self.lora:
            return TaskVector(
                lora={s: self.lora[s] for s in sites}, scale=self.scale, extra=dict(self.extra), meta=self._meta()
            )
        return TaskVector({s: self.dense[s] for s in sites}, extra=dict(self.extra), meta=self._meta())

    def to_dense(self) -> TaskVector:
        return TaskVector({s: self.delta(s) for s in self.sites}, extra=dict(self.extra), meta=self._meta(kind="dense"))

    def _meta(self, **changes: Any) -> dict[str, Any]:
        meta = dict(self.meta)
        meta.update(changes)
        return meta

    # ---------------------------------------------------------------- arithmetic
    def _check_same_sites(self, other: TaskVector) -> None:
        for site in self.sites:
            if site not in other.sites:
                raise MismatchError(f"site {site!r} is in one task vector but not the other")
            if self.shape(site) != other.shape(site):
                raise MismatchError(
                    f"site {site!r} has shape {self.shape(site)} in one task vector and {other.shape(site)} in the other"
                )
        if len(self.sites) != len(other.sites):
            extra = next(s for s in other.sites if s not in self.sites)
            raise MismatchError(f"site {extra!r} is in one task vector but not the other")

    def __add__(self, other: TaskVector | int) -> TaskVector:
        if isinstance(other, int) and other == 0:  # lets the builtin sum() start from 0
            return self
        if not isinstance(other, TaskVector):
            return NotImplemented
        self._check_same_sites(other)
        extra = dict(self.extra)
        for k, t in other.extra.items():
            extra[k] = extra[k] + t if k in extra else t
        tasks = list(self.meta.get("tasks", [])) + list(other.meta.get("tasks", []))
        meta = self._meta(tasks=tasks)
        if self.lora and other.lora:
            lora = {}
            for s in self.sites:
                (a1, b1), (a2, b2) = self.lora[s], other.lora[s]
                lora[s] = (torch.cat([a1, a2]), torch.cat([self.scale * b1, other.scale * b2], dim=1))
            meta["rank"] = max(a.shape[0] for a, _ in lora.values())
            return TaskVector(lora=lora, scale=1.0, extra=extra, meta=meta)
        meta.update(kind="dense", rank=None)
        return TaskVector({s: self.delta(s) + other.delta(s) for s in self.sites}, extra=extra, meta=meta)

    __radd__ = __add__

    @classmethod
    def sum(cls, vectors: Iterable[TaskVector]) -> TaskVector:
        """The sum of one or more vectors. The builtin ``sum()`` of none is the int 0, which fails later
        (``.save``, ``.select``) far from the cause; this refuses it where it happens."""
        items = list(vectors)
        if not items:
            raise UsageError("no task vector to add up: at least one is needed")
        total = items[0]
        for tv in items[1:]:
            total = total + tv
        return total

    def __mul__(self, c: float) -> TaskVector:
        if not isinstance(c, (int, float)):
            return NotImplemented
        extra = {k: c * v for k, v in self.extra.items()}
        if self.lora:
            return TaskVector(lora=dict(self.lora), scale=self.scale * c, extra=extra, meta=self._meta())
        return TaskVector({s: c * d for s, d in self.dense.items()}, extra=extra, meta=self._meta())

    __rmul__ = __mul__

    def __neg__(self) -> TaskVector:
        return self * -1.0

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self + (-other)

    # --------------------------------------------------------------- properties
    def norms(self) -> dict[str, float]:
        """Frobenius norm per site; for LoRA from the r x r Gram matrices, never the d x d product."""
        if self.lora:
            out = {}
            for s, (a, b) in self.lora.items():
                a, b = a.double(), b.double()
                sq = torch.trace((b.T @ b) @ (a @ a.T)).clamp_min(0)
                out[s] = abs(self.scale) * math.sqrt(sq.item())
            return out
        return {s: torch.linalg.matrix_norm(d.double()).item() for s, d in self.dense.items()}

    def singular_values(self, site: str) -> torch.Tensor:
        if self.lora:  # sigma(s B A) = sigma(s R_B R_A^T) with B = Q_B R_B, A^T = Q_A R_A
            a, b = self.lora[site]
            r_b = torch.linalg.qr(b.double())[1]
            r_a = torch.linalg.qr(a.double().T)[1]
            return torch.linalg.svdvals(self.scale * r_b @ r_a.T).abs()
        return torch.linalg.svdvals(self.dense[site].double())

    def ranks(self, rtol: float | None = None) -> dict[str, int]:
        """Numerical rank per site: singular values above ``rtol * sigma_max`` (default d * eps)."""
        out = {}
        for s in self.sites:
            sv = self.singular_values(s)
            if sv.numel() == 0 or sv.max() == 0:
                out[s] = 0
                continue
            tol = rtol if rtol is not None else max(self.shape(s)) * torch.finfo(self._dtype(s)).eps
            out[s] = int((sv > tol * sv.max()).sum())
        return out

    def _dtype(self, site: str) -> torch.dtype:
        return self.lora[site][0].dtype if self.lora else self.dense[site].dtype

    def check_finite(self) -> None:
        """Refuse NaN/Inf before any work is spent on a broken vector."""
        named: Iterable[tuple[str, torch.Tensor]] = (
            [(f"{s} (A)", a) for s, (a, _) in self.lora.items()] + [(f"{s} (B)", b) for s, (_, b) in self.lora.items()]
            if self.lora
            else list(self.dense.items())
        )
        for name, t in [*named, *self.extra.items()]:
            if not torch.isfinite(t).all():
                raise OrthoxferError(
                    f"task vector has NaN or Inf values at site {name}; recompute it from finite weights"
                )

    # ------------------------------------------------------------------- models
    @classmethod
    def from_models(
        cls,
        base: nn.Module,
        finetuned: nn.Module,
        sites: str | list[Site] = "attn",
        full: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> TaskVector:
        """``finetuned - base`` on the sites; with ``full``, every other changed parameter goes to ``extra``."""
        chosen = find_sites(base, sites) if isinstance(sites, str) else sites
        with torch.no_grad():
            dense = {s.name: (read_site(finetuned, s) - read_site(base, s)).detach().clone() for s in chosen}
            extra: dict[str, torch.Tensor] = {}
            if full:
                site_params = {s.param for s in chosen}
                tuned = dict(finetuned.named_parameters())
                for name, p in base.named_parameters():
                    if name not in site_params:
                        d = tuned[name].detach() - p.detach()
                        if d.any():
                            extra[name] = d.clone()
                # rows of a site parameter that no site covers (e.g. only q chosen) are plain deltas too
                for name in site_params:
                    covered = torch.zeros(base.get_parameter(name).shape[0], dtype=torch.bool)
                    for s in chosen:
                        if s.param == name:
                            covered[s.start : s.stop] = True
                    d = tuned[name].detach() - base.get_parameter(name).detach()
                    d[covered] = 0
                    if d.any():
                        extra[name] = d.clone()
        dtype = next(iter(dense.values())).dtype
        m: dict[str, Any] = {"kind": "dense", "rank": None, "dtype": str(dtype).removeprefix("torch."), "tasks": []}
        m.update(meta or {})
        return cls(dense, extra=extra, meta=m)

    def check_fits(self, model: nn.Module) -> list[Site]:
        """The model's sites for this vector, or one line naming the first mismatch."""
        for site in self.sites:
            try:
                (resolved,) = sites_by_name(model, [site])
            except ValueError:
                raise MismatchError(
                    f"site {site!r} of the task vector does not exist in the model "
                    f"(task vector shape {self.shape(site)}, model shape none)"
                ) from None
            model_shape = tuple(read_site(model, resolved).shape)
            if model_shape != self.shape(site):
                raise MismatchError(
                    f"site {site!r}: task vector shape {self.shape(site)} does not match model shape {model_shape}"
                )
        params = dict(model.named_parameters())
        for name, t in self.extra.items():
            if name not in params or params[name].shape != t.shape:
                found = tuple(params[name].shape) if name in params else "none"
                raise MismatchError(
                    f"parameter {name!r}: task vector shape {tuple(t.shape)} does not match model shape {found}"
                )
        return sites_by_name(model, self.sites)

    @torch.no_grad()
    def apply_to(self, model: nn.Module, scale: float = 1.0) -> nn.Module:
        """Add ``scale * self`` to ``model`` in place and return it."""
        for site in self.check_fits(model):
            view = read_site(model, site)
            view.add_((scale * self.delta(site.name)).to(view.device, view.dtype))
        for name, t in self.extra.items():
            p = model.get_parameter(name)
            p.add_((scale * t).to(p.device, p.dtype))
        return model

    def added_to_copy(self, model: nn.Module, scale: float = 1.0) -> nn.Module:
        """A copy of ``model`` carrying ``scale * self``: the model stays as it was, to score other lambdas on."""
        return self.apply_to(copy.deepcopy(model), scale)

    # ----------------------------------------------------------------------- IO
    def save(self, path: Path | str) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for s, d in self.dense.items():
            tensors[f"dense/{s}"] = d
        for s, (a, b) in self.lora.items():
            tensors[f"lora_A/{s}"] = a
            tensors[f"lora_B/{s}"] = b
        for s, t in self.extra.items():
            tensors[f"extra/{s}"] = t
        meta = self._meta(
            kind=self.kind, rank=self.rank, scale=self.scale, sites=self.sites, orthoxfer_version=__version__
        )
        save_artifact(path, KIND, tensors, meta)

    @classmethod
    def load(cls, path: Path | str) -> TaskVector:
        tensors, meta = load_artifact(path, KIND)
        try:
            sites = meta.pop("sites")
            scale = float(meta.pop("scale"))
            if meta.get("kind") == "lora":
                lora = {s: (tensors[f"lora_A/{s}"], tensors[f"lora_B/{s}"]) for s in sites}
                dense = {}
            else:
                dense, lora = {s: tensors[f"dense/{s}"] for s in sites}, {}
        except KeyError as exc:
            raise ArtifactError(f"{path} is not a valid orthoxfer task vector file (missing {exc})") from None
        extra = {k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")}
        return cls(dense, lora, scale, extra, meta)
