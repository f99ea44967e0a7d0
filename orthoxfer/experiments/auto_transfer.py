"""``orthoxfer transfer --method auto``: its candidates, cheapest first (ties go to the earlier), and the choice.

``transfer`` writes a task vector for the target per task (and what a transfer learnt
to get it), never U's. So its candidates are everything that ends in a vector: the
source vector as it is (direct addition), the data-free transfers (:data:`DATA_FREE`),
few-shot FT (its update is a vector) and transfer-then-tune from each of those starts
(lambda * the start + the few-shot update). The aligners end in U's over a start:
``align --method auto`` chooses among them (:mod:`orthoxfer.experiments.auto_align`).
"""

from __future__ import annotations

import functools
from typing import Any

from orthoxfer.experiments.auto_alone import (
    SELECT_EVERY,
    AutoInputs,
    Candidate,
    Fitted,
    budgeted,
    default_budget,
    run_auto,
    usable,
)
from orthoxfer.experiments.tune import chosen_step, finetune_updates, transfer_then_tune
from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.transfers.base import Transferred
from orthoxfer.transfers.carry import carry

DIRECT = "direct"  # the vector as it is
DATA_FREE = ("transfusion",)  # transfers that read no data (and need the source model): candidates and FT starts
FINETUNE = "finetune"


def candidates(inputs: AutoInputs, finetuning: FinetuneSettings) -> list[Candidate[Transferred]]:
    """The declared candidates; each start is carried once per task, however many candidates and rounds read it."""

    @functools.cache
    def started(start: str, task: str) -> Transferred:
        vector = inputs.vectors[task]
        if start == DIRECT:
            return Transferred(vector)
        pool = {task: inputs.train[task]}
        return carry(start, {task: vector}, inputs.source, inputs.target, pool, inputs.carrying)[task]

    def as_is(start: str) -> Candidate[Transferred]:
        return Candidate(
            start,
            False,
            lambda task, steps: Fitted(started(start, task).vector, started(start, task)),
            needs_source=start != DIRECT,
        )

    def finetuned(task: str, steps: int) -> Fitted[Transferred]:
        folder = inputs.folder(task, FINETUNE, steps)
        settings = budgeted(finetuning, steps)
        update = finetune_updates(
            inputs.target, {task: inputs.train[task]}, {task: inputs.val[task]}, settings, folder, per_task=True
        )[task]
        return Fitted(update, Transferred(update), chosen_step(update.meta))

    def tuned(start: str) -> Candidate[Transferred]:
        name = f"{start}-then-{FINETUNE}"

        def fit(task: str, steps: int) -> Fitted[Transferred]:
            begin = started(start, task)
            _, fields, updates = transfer_then_tune(
                inputs.target,
                {task: begin.vector},
                {task: inputs.train[task]},
                {task: inputs.val[task]},
                budgeted(finetuning, steps),
                inputs.scales,
                inputs.folder(task, name, steps),
            )
            vector = begin.vector * fields["scale"][task] + updates[task]
            kept = Transferred(vector, begin.learnt, begin.diagnostics)
            return Fitted(vector, kept, {"start_scale": fields["scale"][task], **chosen_step(updates[task].meta)})

        return Candidate(name, True, fit, needs_source=start != DIRECT)

    starts = (DIRECT, *DATA_FREE)
    return [*map(as_is, starts), Candidate(FINETUNE, True, finetuned), *map(tuned, starts)]


def auto_transfer(
    inputs: AutoInputs, finetuning: FinetuneSettings, budget: int | None = None
) -> tuple[dict[str, Transferred], dict[str, Any]]:
    """Per task the candidate best on validation, its vector at its lambda (so the target carries it at scale 1), and
    the record (:func:`~orthoxfer.experiments.auto_alone.run_auto`).

    ``budget``: optimiser steps per task the trained candidates share; by default as many
    as running each once with ``finetuning.steps``.
    """
    finetuning = finetuning.replace(select_every=finetuning.select_every or SELECT_EVERY)
    declared = candidates(inputs, finetuning)
    steps = default_budget(usable(declared, inputs), finetuning.steps) if budget is None else budget
    chosen, record = run_auto(declared, inputs, steps)
    done = {
        task: Transferred(s.fitted.vector * s.scale, s.fitted.kept.learnt, s.fitted.kept.diagnostics)
        for task, s in chosen.items()
    }
    return done, record
