"""The paper's released code's sum of LoRA task vectors, reproduced for comparison with its published numbers only.

The code keeps a LoRA task vector as the change of the LoRA parameters, (A_i - A_0, B_i)
per site, sums those parameter-wise and adds the sum to the LoRA model, so the target
carries ``s (sum_i B_i)(A_0 + sum_i (A_i - A_0))``: the product of the summed factors,
with the cross terms ``s B_i (A_j - A_0)``, i != j, that the sum of the updates
``sum_i s B_i A_i`` (what :meth:`TaskVector.__add__` gives, by concatenating factors) has
not. ``A_0`` is the shared initial A, which a vector file does not keep: it is drawn again
exactly as :class:`orthoxfer.fit.finetune.SiteUpdates` drew it (same seed, same shapes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from orthoxfer.errors import UsageError
from orthoxfer.vectors.taskvector import TaskVector


def initial_a(vector: TaskVector) -> torch.Tensor:
    """The (n_sites, rank, d) A every site of ``vector`` started from, redrawn from its fine-tuning seed."""
    settings = vector.meta.get("finetune") or {}
    if not vector.lora or "seed" not in settings:
        raise UsageError("--reference-lora-sum needs LoRA vectors made by `orthoxfer finetune` (their seed in meta)")
    rank, d = next(iter(vector.lora.values()))[0].shape
    generator = torch.Generator().manual_seed(int(settings["seed"]))
    bound = 1.0 / math.sqrt(d)  # exactly as SiteUpdates computes it, so the redraw is bit for bit
    return (torch.rand(len(vector.sites), rank, d, generator=generator) * 2 - 1) * bound


def reference_lora_sum(vectors: Sequence[TaskVector]) -> TaskVector:
    """``s (sum B_i)(A_0 + sum (A_i - A_0))`` per site, as one LoRA vector (the code's bug; see the module)."""
    first = vectors[0]
    start = initial_a(first)
    for v in vectors[1:]:
        if v.sites != first.sites or v.scale != first.scale or not torch.equal(initial_a(v), start):
            raise UsageError("--reference-lora-sum needs LoRA vectors of one start: the same sites, scale and seed")
    lora = {}
    for i, site in enumerate(first.sites):
        a = start[i] + torch.stack([v.lora[site][0].float() - start[i] for v in vectors]).sum(0)
        b = torch.stack([v.lora[site][1].float() for v in vectors]).sum(0)
        lora[site] = (a, b)
    return TaskVector(
        lora=lora,
        scale=first.scale,
        meta={**first.meta, "tasks": [t for v in vectors for t in v.meta.get("tasks", [])], "reference_lora_sum": True},
    )
