"""An alignment: the U of every site, how it was found, and how it carries a task vector.

Direction convention: if the target's inputs to a site relate to the source's by
``h_S = U h_T`` (column vectors), then ``W_T = U^T W_S U`` and the transferred update
is ``dW_T = U^T dW_S U``. With two maps per site (inputs ``h_S = U_in h_T``, outputs
``y_S = U_out y_T``) it is ``dW_T = U_out^T dW_S U_in`` (:func:`rotate` with ``outs``). A LoRA update ``s B A`` becomes ``s (U^T B)(A U)``: still
factored, never a d x d x d product.

U's are stored per *key*: with ``tie=site`` a key is a site, with ``tie=block`` all
sites of one attention block share a key (one tensor), with ``tie=model`` one key
serves every site of a width. ``scope`` is ``joint`` (one set of U's for the summed
task vectors) or a task name (``per-task`` mode). A U learned with ``--rotation-rank k``
from the identity is kept as its factors, ``U = I + L R^T`` (:class:`LowRankU`): for
ViT-B/32 at k = 16 a scope takes 5-9 MB instead of 113 MB, which is what lets per-task
alignments sit beside their task vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from orthoxfer.artifacts import ArtifactError, load_artifact, save_artifact
from orthoxfer.errors import UsageError
from orthoxfer.vectors.taskvector import MismatchError, TaskVector

KIND = "alignment"
JOINT = "joint"


@dataclass(frozen=True)
class LowRankU:
    """``U = I + L R^T`` with L, R of shape (d, m): the factors a low-rank strategy learned, stored as they are."""

    left: torch.Tensor
    right: torch.Tensor

    def dense(self) -> torch.Tensor:
        u = self.left @ self.right.T
        u.diagonal().add_(1)
        return u


def as_matrix(u: torch.Tensor | LowRankU) -> torch.Tensor:
    return u.dense() if isinstance(u, LowRankU) else u


def rotate(
    tv: TaskVector, us: Mapping[str, torch.Tensor], outs: Mapping[str, torch.Tensor] | None = None
) -> TaskVector:
    """``U^T dW U`` for every site of ``tv``, or with output-side maps ``U_out^T dW U_in``; non-site parameters unchanged.

    ``us`` are the input-side maps (``h_S = U_in h_T`` on the site's inputs), ``outs`` the
    output-side ones (``y_S = U_out y_T`` on its outputs); without ``outs`` each site's
    output map is its input map, the similarity transform of a square site. Two-sided
    maps carry rectangular sites (an MLP's d x 4d weights) too. LoRA stays factored:
    ``s (U_out^T B)(A U_in)``.
    """
    outs = us if outs is None else outs
    missing = [s for s in tv.sites if s not in us or s not in outs]
    if missing:
        raise MismatchError(f"the alignment has no U for site {missing[0]!r} of the task vector")
    meta = dict(tv.meta, aligned=True)

    def maps(site: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return outs[site].to(like.device, like.dtype), us[site].to(like.device, like.dtype)

    if tv.lora:
        lora = {}
        for s, (a, b) in tv.lora.items():
            u_out, u_in = maps(s, a)
            lora[s] = (a @ u_in, u_out.T @ b)
        return TaskVector(lora=lora, scale=tv.scale, extra=dict(tv.extra), meta=meta)
    dense = {}
    for s, d in tv.dense.items():
        u_out, u_in = maps(s, d)
        dense[s] = u_out.T @ d @ u_in
    return TaskVector(dense, extra=dict(tv.extra), meta=meta)


@dataclass
class Alignment:
    transforms: dict[str, dict[str, torch.Tensor | LowRankU]]  # scope -> key -> U (d x d, or its factors)
    keys: dict[str, str]  # site -> key
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def scopes(self) -> list[str]:
        return list(self.transforms)

    @property
    def sites(self) -> list[str]:
        return list(self.keys)

    def matrices(self, scope: str = JOINT) -> dict[str, torch.Tensor]:
        """``{site: U}`` of one scope, d x d (built from factors where stored so); tied sites share one tensor."""
        if scope not in self.transforms:
            raise UsageError(f"this alignment has no U's for {scope!r}; it has {', '.join(self.scopes)}")
        table = {key: as_matrix(u) for key, u in self.transforms[scope].items()}
        return {site: table[key] for site, key in self.keys.items()}

    def scope_for(self, tv: TaskVector, task: str | None = None) -> str:
        if JOINT in self.transforms:
            return JOINT
        if task is None:
            tasks = tv.meta.get("tasks") or []
            if len(tasks) != 1:
                raise UsageError(
                    f"this per-task alignment has U's for {', '.join(self.scopes)}; name the task the vector belongs to"
                )
            task = tasks[0]
        if task not in self.transforms:
            raise UsageError(f"this alignment has no U's for task {task!r}; it has {', '.join(self.scopes)}")
        return task

    def apply(self, tv: TaskVector, task: str | None = None) -> TaskVector:
        """The task vector carried into the target: ``U^T dW U`` per site."""
        return rotate(tv, self.matrices(self.scope_for(tv, task)))

    # ----------------------------------------------------------------------- IO
    def save(self, path: Path | str) -> None:
        tensors = {}
        for scope, table in self.transforms.items():
            for key, u in table.items():
                if isinstance(u, LowRankU):
                    tensors[f"l/{scope}/{key}"], tensors[f"r/{scope}/{key}"] = u.left, u.right
                else:
                    tensors[f"u/{scope}/{key}"] = u
        save_artifact(path, KIND, tensors, dict(self.meta, keys=self.keys, scopes=self.scopes))

    @classmethod
    def load(cls, path: Path | str) -> Alignment:
        tensors, meta = load_artifact(path, KIND)

        def stored(name: str) -> torch.Tensor | LowRankU:
            if f"u/{name}" in tensors:
                return tensors[f"u/{name}"]
            return LowRankU(tensors[f"l/{name}"], tensors[f"r/{name}"])

        try:
            keys, scopes = meta.pop("keys"), meta.pop("scopes")
            transforms = {s: {k: stored(f"{s}/{k}") for k in dict.fromkeys(keys.values())} for s in scopes}
        except KeyError as exc:
            raise ArtifactError(f"{path} is not a valid orthoxfer alignment file (missing {exc})") from None
        return cls(transforms, keys, meta)
