"""Running the bench's rows for every seed: in order, each stored as soon as it is done, so a run resumes where it
stopped.

Under torchrun :func:`run_bench` has every process compute every row together (they
meet in each row's alignment, :mod:`orthoxfer.fit.distributed`); the study deals its
rows out instead (:func:`deal_rows`), whole, one process each: a row needs nothing from
another, so many rows spread better that way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from orthoxfer.artifacts import write_json
from orthoxfer.experiments.auto import AUTO, choose
from orthoxfer.experiments.bench import BenchConfig, Row, record_head, run_row
from orthoxfer.fit import distributed
from orthoxfer.runs import Run
from orthoxfer.suites.base import SuiteInputs
from orthoxfer.vectors.controls import check_task_count


def run_bench(
    inputs: SuiteInputs,
    config: BenchConfig,
    run: Run,
    seeds: list[int],
    progress: Callable[[str], None] = print,
    deal: bool = False,
) -> list[dict]:
    """Every row for every seed, reusing rows already stored in the run folder.

    Which rows are stored is read before any is computed: under torchrun every process
    must compute the same rows (they meet in each row's alignment), whenever rank 0
    writes its records. With ``deal`` the rows are dealt out instead (:func:`deal_rows`),
    and every record is read back from the folder once all are stored.
    """
    check_task_count(config.controls, len(inputs.tasks))
    config.check_validation(held_out=any(t.val is None for t in inputs.tasks))
    records = []
    rows = config.rows(planted=inputs.planted is not None)
    for seed in seeds:
        paths = [row_path(run, row, seed) for row in rows]
        stored = [path.exists() for path in paths]
        distributed.barrier()
        dealt = deal_rows(rows, paths, stored, inputs, config, run, seed, progress) if deal else set()
        for i, (row, path, reuse) in enumerate(zip(rows, paths, stored), 1):
            if reuse or i in dealt:
                records.append(json.loads(path.read_text()))
                if reuse:
                    progress(f"[{i}/{len(rows)}] {row.label} (seed {seed}): reused")
                continue
            progress(f"[{i}/{len(rows)}] {row.label} (seed {seed})")
            torch.manual_seed(seed)
            if row.method == AUTO:  # chosen among this seed's rows on validation: nothing trained, no test read
                seen = [r for r in records if r["seed"] == seed]
                record = {
                    **record_head(row, seed),
                    "scale": None,
                    "seconds": 0.0,
                    **choose(seen, [t.name for t in inputs.tasks]),
                }
            else:
                record = run_row(row, inputs, config, run, seed)
            if run.writes:
                write_json(path, record)
            records.append(record)
    return records


def row_path(run: Run, row: Row, seed: int) -> Path:
    """Where a row's record is stored: its presence is what a resume reuses."""
    return run.file(f"rows/{row.id}-seed{seed}.json")


def deal_rows(
    rows: list[Row],
    paths: list[Path],
    stored: list[bool],
    inputs: SuiteInputs,
    config: BenchConfig,
    run: Run,
    seed: int,
    progress: Callable[[str], None],
) -> set[int]:
    """One seed's missing rows dealt to the processes, the k-th to rank k mod N, each computed by its process alone and
    stored as one process stores it; returns their numbers (from 1) once every process has stored its own.

    The auto row is left out: it chooses among the others, so it is made after them.
    """
    group = distributed.ranks()
    missing = [i for i, (row, done) in enumerate(zip(rows, stored), 1) if not done and row.method != AUTO]
    for k, i in enumerate(missing):
        row, owner = rows[i - 1], k % group.size
        label = f"[{i}/{len(rows)}] {row.label} (seed {seed})"
        if owner != group.rank:
            progress(f"{label}: dealt to rank {owner}")
            continue
        progress(label)
        torch.manual_seed(seed)
        with distributed.alone():
            write_json(paths[i - 1], run_row(row, inputs, config, run, seed))
    distributed.barrier()
    return set(missing)
