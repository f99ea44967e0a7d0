"""``orthoxfer align --method auto``: its candidates, cheapest first (ties go to the earlier), and the choice.

``align`` writes U's per site (``alignment.safetensors``) over the vector its start
carried, so its candidates are alignments: each start of :data:`STARTS` kept as it is
(U = I on the vector as it is, which is direct addition; U = I on what transfusion
carried; procrustes' closed form), then each aligner of :data:`ALIGNERS` trained from
each start, anchored there with its step chosen on validation (so the start is kept
unless training beats it). Few-shot FT and transfer-then-tune end in a vector that no
U's express: ``transfer --method auto`` chooses among those
(:mod:`orthoxfer.experiments.auto_transfer`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from orthoxfer.alignment.align import align
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.alignment.start import start_from
from orthoxfer.experiments.auto import AUTO
from orthoxfer.experiments.auto_alone import (
    AutoInputs,
    Candidate,
    Fitted,
    budgeted,
    default_budget,
    run_auto,
    usable,
)
from orthoxfer.experiments.bench import ANCHORED
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.vectors.taskvector import TaskVector

STARTS = ("identity", "transfusion", "procrustes")  # U0 = I on the vector; I on what transfusion carried; closed form
ALIGNERS = ("penalty",)  # trained from every start, anchored there; the first also holds the starts themselves


@dataclass
class Aligned:
    """A candidate's alignment (one scope: its task) and the vector its U's carry (the start's)."""

    alignment: Alignment
    started: TaskVector


def anchoring(settings: AlignSettings) -> dict[str, Any]:
    """The trained candidates' beta (``settings.anchor``, from the config or ``--anchor``) and validation interval:
    auto always chooses the step on validation, so an interval of 0 (none) takes the anchored rows' default."""
    return {"anchor": settings.anchor, "select_every": settings.select_every or ANCHORED["select_every"]}


def candidates(inputs: AutoInputs, settings: AlignSettings) -> list[Candidate[Aligned]]:
    """The declared candidates; each start is carried once per task, however many candidates and rounds read it."""

    @functools.cache
    def started(start: str, task: str) -> TaskVector:
        pool = {task: inputs.train[task]}
        vectors = {task: inputs.vectors[task]}
        return start_from(start, vectors, inputs.source, inputs.target, pool, inputs.carrying)[task]

    def candidate(name: str, start: str, changes: dict[str, Any], trained: bool) -> Candidate[Aligned]:
        def fit(task: str, steps: int) -> Fitted[Aligned]:
            aligning = settings.replace(init=start, mode="per-task", **changes)
            aligning = budgeted(aligning, steps) if trained else aligning
            vector = started(start, task)
            problem = AlignProblem(
                inputs.target, {task: vector}, {task: inputs.train[task]}, inputs.source, {task: inputs.val[task]}
            )
            alignment = align(problem, aligning, inputs.folder(task, name, steps) if trained else None)
            moved = alignment.apply(vector.select(alignment.sites), task=task)
            selection = alignment.meta.get("selection", {}).get(task, {})
            fields = {"chosen_step": selection["chosen_step"]} if selection else {}
            return Fitted(moved, Aligned(alignment, vector), fields)

        return Candidate(name, trained, fit, needs_source=start != "identity")

    kept = [candidate(s, s, {"method": ALIGNERS[0], "anchor": math.inf}, False) for s in STARTS]
    near = anchoring(settings)
    trained = [candidate(f"{m}-from-{s}", s, {"method": m, **near}, True) for m in ALIGNERS for s in STARTS]
    return kept + trained


def auto_align(
    inputs: AutoInputs, settings: AlignSettings, budget: int | None = None
) -> tuple[Alignment, dict[str, TaskVector], dict[str, Any]]:
    """Per task the candidate best on validation, as one per-task alignment; the vectors its U's carry (each start's);
    and the record (its ``scale``: each task's lambda, chosen on validation), also in the alignment's ``meta["auto"]``.

    ``budget``: optimiser steps per task the trained candidates share; by default as many
    as running each once with ``settings.steps``.
    """
    declared = candidates(inputs, settings)
    steps = default_budget(usable(declared, inputs), settings.steps) if budget is None else budget
    chosen, record = run_auto(declared, inputs, steps)
    record["anchored"] = anchoring(settings)
    alignments = {task: s.fitted.kept.alignment for task, s in chosen.items()}
    first = next(iter(alignments.values()))
    meta = {
        "strategy": AUTO,
        "exact": all(a.meta["exact"] for a in alignments.values()),
        "sites": first.meta["sites"],
        "tasks": list(alignments),
        "seed": first.meta["seed"],
        "auto": record,
        "per_task": {t: {k: v for k, v in a.meta.items() if k != "diagnostics"} for t, a in alignments.items()},
        "diagnostics": {t: a.meta["diagnostics"][t] for t, a in alignments.items()},
        **settings.extra,
    }
    merged = Alignment({t: a.transforms[t] for t, a in alignments.items()}, first.keys, meta)
    return merged, {t: s.fitted.kept.started for t, s in chosen.items()}, record
