"""Carrying task vectors with a transfer method: the one loop ``bench`` and ``orthoxfer transfer`` share.

In ``per-task`` mode each vector sees only its own task's pool (GradFix's gradients,
theseus's images); in ``joint`` mode the caller sums the vectors first (the key ``joint``)
and the sum sees every pool.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from orthoxfer.artifacts import save_artifact
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.transfers.base import Transferred, TransferSettings
from orthoxfer.transfers.registry import TRANSFERS, check_method
from orthoxfer.vectors.sites import require_square
from orthoxfer.vectors.taskvector import TaskVector

LEARNT = "transfer_learnt"


def carry(
    name: str,
    vectors: dict[str, TaskVector],
    source: nn.Module | None,
    target: nn.Module,
    pools: dict[str, FewShotTask],
    settings: TransferSettings,
) -> dict[str, Transferred]:
    """Each scope's vector carried into ``target`` by method ``name``: a task's vector sees its own task's pool
    only, ``joint`` (the caller's sum of every task's vector) sees every pool.

    ``pools`` are the target's few-shot *training* parts: whatever a caller selects
    lambda on (validation) must not be among them.
    """
    check_method(name)
    method = TRANSFERS[name]()
    if not method.rectangular:  # before any minutes are spent
        for v in vectors.values():
            require_square({s: v.shape(s) for s in v.sites}, name)
    seen = {k: pools if k == "joint" else {k: pools[k]} if k in pools else {} for k in vectors}
    return {k: method.transfer(v, source, target, seen[k] or None, settings) for k, v in vectors.items()}


def save_learnt(path: Path, done: dict[str, Transferred], meta: dict) -> None:
    """What each scope's transfer learnt (masks, permutations, maps) as one safetensors file, keys ``<scope>/<name>``."""
    tensors: dict[str, torch.Tensor] = {f"{scope}/{k}": t for scope, d in done.items() for k, t in d.learnt.items()}
    save_artifact(path, LEARNT, {k: t.clone() for k, t in tensors.items()}, meta)
