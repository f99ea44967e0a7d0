"""The transferability check: does a task vector carry into this target at all, measured in seconds before training.

Last-block CKA was 0.87-0.90 on three rungs of the mini ladder alike, yet only one of
them carried the vector: relatedness of features does not say whether a vector
transfers. What does is asked directly: the validation gain over target only of the
transfers that need no data and no training (the vector added as it is, and carried by
transfusion's weight-matched permutations), each at its lambda chosen on validation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from orthoxfer.evaluation.accuracy import pool_accuracy
from orthoxfer.evaluation.baselines import SCALES, direct_addition
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.vectors.taskvector import TaskVector

DATA_FREE = ("direct", "transfusion")
# how to read the check, measured on the mini ladder by the evidence study (benchmarks/results/study-v2)
READING = "on the mini ladder +8.4 points separated the pairs whose vector carries from those whose does not"


def transferability(
    target: nn.Module,
    vectors: dict[str, TaskVector],
    validation: dict[str, FewShotTask],
    source: nn.Module | None,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, Any]]:
    """Per task: target only's validation accuracy and each data-free transfer's gain over it (at its lambda)."""
    from orthoxfer.transfers.carry import carry
    from orthoxfer.transfers.registry import transfer_settings

    base = pool_accuracy(target, validation, device)
    out: dict[str, dict[str, Any]] = {}
    for task, vector in vectors.items():
        carried = {"direct": vector}
        if source is not None:
            done = carry("transfusion", {task: vector}, source, target, {}, transfer_settings({}, device=str(device)))
            carried["transfusion"] = done[task].vector
        row: dict[str, Any] = {"target": base[task]}
        for method, v in carried.items():
            chosen = direct_addition(target, v, {task: validation[task]}, SCALES, device)
            row[method] = {"gain": chosen.validation[chosen.scale] - base[task], "scale": chosen.scale}
        row["best_gain"] = max(row[m]["gain"] for m in carried)
        out[task] = row
    return out
