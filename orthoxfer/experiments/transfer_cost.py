"""The transfer methods' rows of ``bench-speed``: one whole transfer of the benchmark's vector, timed like a step.

A transfer method has no step loop: its cost is the whole transfer, as the closed-form
``procrustes`` row's is its whole solve. ``theseus``: the statistics of both models' inputs
and outputs of every site on the batch, then one polar factor per map (two per site).
``gradfix``: the target's backward passes over two images per class of the batch, one
per image with the majority vote and one in all with the mean vote, then the mask.
``transfusion``: one round of its data-free matching of the two towers' weights (head
spectra, then each permutation by Hungarian assignment) and the relabelling; a transfer
takes up to ``--transfusion-rounds`` rounds (its ``rounds`` diagnostic). ``bico``: the
inputs' statistics of both models, then one backward pass per ``--bico-grad-batch`` images
in each model for the output side's gradients, and two polar factors per site.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.transfers.base import Transfer, Transferred, TransferSettings
from orthoxfer.transfers.registry import TRANSFERS, transfer_settings
from orthoxfer.vectors.taskvector import TaskVector

ROWS: dict[str, tuple[str, dict[str, Any]]] = {  # row name -> (transfer method, its options)
    "theseus": ("theseus", {}),
    "gradfix-majority": ("gradfix", {"gradfix_vote": "majority"}),
    "gradfix-mean": ("gradfix", {"gradfix_vote": "mean"}),
    "transfusion": ("transfusion", {"transfusion_rounds": 1}),
    "bico": ("bico", {}),
}
LABELS = {
    "theseus": "theseus (statistics and solves)",
    "gradfix-majority": "gradfix, majority vote (whole mask)",
    "gradfix-mean": "gradfix, mean vote (whole mask)",
    "transfusion": "transfusion (one matching round, relabelling)",
    "bico": "bico (input statistics, a backward per 8 images in both models, solves)",
}


def transfer_runs(
    names: list[str], vector: TaskVector, source: nn.Module, target: nn.Module, task: FewShotTask, device: torch.device
) -> list[tuple[str, Callable[[], Transferred]]]:
    """``(row name, one whole transfer)`` for each of ``names`` that is a row of :data:`ROWS`, in that order."""
    runs: list[tuple[str, Callable[[], Transferred]]] = []
    for name in (n for n in names if n in ROWS):
        method, options = ROWS[name]
        settings = transfer_settings(options, device=str(device))
        runs.append(
            (name, functools.partial(_transfer_once, TRANSFERS[method], vector, source, target, task, settings))
        )
    return runs


def _transfer_once(
    cls: type[Transfer],
    vector: TaskVector,
    source: nn.Module,
    target: nn.Module,
    task: FewShotTask,
    settings: TransferSettings,
) -> Transferred:
    # a fresh instance per run: transfusion keeps its matching per model pair, and each timed run must redo it
    return cls().transfer(vector, source, target, {task.name: task}, settings)


def learnt_bytes(result: Transferred | None) -> int:
    """What a transfer keeps: its maps or masks (a map two sites share counted once)."""
    unique = {} if result is None else {id(t): t for t in result.learnt.values()}
    return sum(t.numel() * t.element_size() for t in unique.values())
