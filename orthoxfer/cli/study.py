"""``orthoxfer study``: every method on every rung of the ladder of relatedness, with controls and seeds.

Settings resolve as ``bench``'s do (suite defaults <- ``--config`` <- flags, through
:func:`orthoxfer.experiments.bench_settings.resolve_bench`); the rows are bench rows,
stored per rung under ``--out`` and reused by ``--resume``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from orthoxfer.cli.common import comma_floats, comma_list, console, launch, print_wrote, reports_errors
from orthoxfer.errors import UsageError
from orthoxfer.version import __version__, code_version

Opt = typer.Option


@reports_errors
def study_command(
    rungs: Annotated[
        str,
        Opt(
            "--rungs",
            help="Comma-separated rungs: same, release, seed, data (the mini ladder) and "
            "planted (the positive control).",
        ),
    ] = "same,release,seed,data",
    methods: Annotated[
        str | None,
        Opt("--methods", help="Comma-separated strategies and transfer methods (default: every registered one)."),
    ] = None,
    controls: Annotated[
        str,
        Opt(
            "--controls",
            help="Control rows beside every method on every rung: norm,spectrum,orbit,"
            "other-task (each method gets those valid for it); gains are paired against each, the plot uses the first.",
        ),
    ] = "spectrum",
    paper_controls: Annotated[
        str,
        Opt(
            "--paper-controls",
            help="More controls on the data rung (the paper's setting), beside --controls; '' for none.",
        ),
    ] = "norm,spectrum,other-task",
    seeds: Annotated[
        int,
        Opt(
            "--seeds",
            min=1,
            help="How many seeds, from --first-seed on: few-shot draw, alignment and controls (the pre-trained pair "
            "stays the shipped one).",
        ),
    ] = 5,
    first_seed: Annotated[
        int,
        Opt(
            "--first-seed",
            min=0,
            help="The first seed: past the one the config's rates and betas were chosen on, so that no seed's pools "
            "chose its own settings.",
        ),
    ] = 0,
    disjoint_pools: Annotated[
        bool,
        Opt(
            "--disjoint-pools",
            help="Draw the pools from a part of the training split the source vectors are fine-tuned without (by "
            "default they overlap, as the paper's do): what the overlap is worth, against a study without it.",
        ),
    ] = False,
    anchored: Annotated[
        str,
        Opt(
            "--anchored",
            help="Starts of each trained strategy's anchored rows (identity, procrustes, a transfer); '' for none.",
        ),
    ] = "identity",
    tune_from: Annotated[
        str,
        Opt("--tune-from", help="Starts of the transfer-then-tune rows (direct, a transfer); '' for none."),
    ] = "direct,transfusion",
    auto: Annotated[bool, Opt("--auto/--no-auto", help="The auto row: per task, the row best on validation.")] = True,
    tasks: Annotated[
        str | None,
        Opt(
            "--tasks",
            help="Comma-separated tasks (default: the four with most headroom on validation: housenumbers, scenes, relief, pictograms).",
        ),
    ] = None,
    config: Annotated[Path | None, Opt("--config", help="TOML settings, as bench reads them; flags override.")] = None,
    steps: Annotated[
        int | None, Opt("--steps", help="Alignment and few-shot FT steps (default: 100 per task).")
    ] = None,
    lrs: Annotated[
        str | None,
        Opt("--lrs", help="Comma-separated learning rates every trained row tries; the best on validation is kept."),
    ] = None,
    shots: Annotated[int | None, Opt("--shots", help="Few-shot images per task (default: as bench).")] = None,
    size: Annotated[str, Opt("--size", help="full | micro (seconds; for smoke tests).")] = "full",
    width: Annotated[
        int | None,
        Opt(
            "--width",
            help="The pre-trained models' width (default: the shipped 128; micro's own at --size micro); another "
            "width's models are pre-trained on first use and cached (hours at full size: `mini pretrain --width`).",
        ),
    ] = None,
    device: Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[
        Path, Opt("--out", help="Study folder: one bench run folder per rung, and the study's files.")
    ] = Path("benchmarks/results/study-v2"),
    resume: Annotated[
        bool, Opt("--resume", help="Reuse the rows already computed in --out (more seeds or methods add rows only).")
    ] = False,
    overwrite: Annotated[bool, Opt("--overwrite", help="Start --out afresh.")] = False,
    summarise: Annotated[
        bool,
        Opt(
            "--summarise",
            help="Compute no row: write the study's files from the rows stored in --out (all of them, made by "
            "whatever code version each rung's config.json records), e.g. after a fix to the summary.",
        ),
    ] = False,
    allow_code_change: Annotated[
        bool, Opt("--allow-code-change", help="Resume rows made by other code (recorded in each rung's config.json).")
    ] = False,
    rows_from: Annotated[
        Path | None,
        Opt(
            "--rows-from",
            help="With --summarise: the study folder whose rows are read (default --out), the files written to "
            "--out; e.g. some of its rungs or seeds as a study of their own.",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None, Opt("--cache-dir", help="Where the mini models, their vectors and heads are cached.")
    ] = None,
    strategy_options: dict[str, Any] | None = None,
) -> None:
    """Transfer gains over controls on every rung: embed vectors, every method beside its controls, the baselines.

    Each rung's rows are a bench run in --out/<rung>/ (rows stored as they
    finish); the study writes study.json, study.md, gain_vs_cka.png and
    gain_vs_transferability.png (gain against the rung's last-block CKA, and
    against its transferability, per method), and whether one
    transferability threshold separates the rungs. Strategy and transfer
    flags (--alpha, --gradfix-shots ...) set that option for every row that
    reads it, as on bench. Under torchrun each seed's rows are dealt to the
    processes and the summary is the one a single process writes.
    """
    from orthoxfer.experiments.bench_settings import resolve_bench
    from orthoxfer.experiments.step_cost import machine
    from orthoxfer.experiments.study import (
        MODEL_SEED,
        PAPER_RUNG,
        STUDY_TASKS,
        StudyPlan,
        check_models_built,
        check_rungs,
        check_stored,
        run_rung,
        rung_anchors,
        rung_rates,
        rung_suite,
        source_ceiling,
    )
    from orthoxfer.fit import distributed
    from orthoxfer.report.study import summarise_study, write_study
    from orthoxfer.runs import Run
    from orthoxfer.strategies.registry import STRATEGIES
    from orthoxfer.transfers.registry import TRANSFERS

    names = check_rungs(comma_list(rungs) or ())
    chosen_methods = comma_list(methods) or (*STRATEGIES, *TRANSFERS)
    chosen_controls = comma_list(controls)
    if not chosen_controls:
        raise UsageError(
            "--controls needs at least one control (norm, spectrum, orbit, other-task): gains are measured against it"
        )
    dev = launch(device)
    choices = {
        "methods": chosen_methods,
        "kinds": ("embed",),
        "controls": chosen_controls,
        "procrustes_init": False,
        "ties": ("site",),
        "lrs": comma_floats(lrs, "--lrs"),
        "mode": None,
        "anchored": comma_list(anchored) or (),
        "tune_from": comma_list(tune_from) or (),
        "auto": auto,
    }
    suites = dict.fromkeys(rung_suite(r)[0] for r in names)
    study_tasks = comma_list(tasks) or STUDY_TASKS
    settings = {
        s: resolve_bench(s, size, dev, config, shots, steps, None, strategy_options, choices, len(study_tasks))
        for s in suites
    }
    plan = StudyPlan(
        names,
        seeds,
        study_tasks,
        size,
        settings,
        dev,
        cache_dir,
        {PAPER_RUNG: comma_list(paper_controls) or ()},
        allow_code_change,
        width,
        rung_rates(config),
        rung_anchors(config),
        first_seed,
        disjoint_pools,
        summarise,
    )
    if summarise and distributed.launched():
        raise UsageError("--summarise computes no row: run it in one process, without torchrun")
    if distributed.launched():
        check_models_built(plan)
    per_rung = ", ".join(f"{r} {plan.rows(r)}" for r in names)  # checks every rung's controls before --out is touched
    rows = rows_from or out
    in_place = summarise and rows.resolve() == out.resolve()  # the summary beside its rows
    if rows_from is not None and not summarise:
        raise UsageError("--rows-from reads a study's rows for --summarise; add --summarise, or drop --rows-from")
    if summarise:
        if in_place and overwrite:
            raise UsageError(f"--overwrite would delete the rows --summarise reads in {rows}; write to another --out")
        check_models_built(plan)  # a summary loads the models the rows were made with, never trains them
        for rung in names:
            check_stored(plan, rung, rows)
    # refuses a folder with a run in it, as bench does; a summary beside its rows replaces the one there
    run = Run(out, overwrite=overwrite, resume=resume or in_place)
    console.print(
        f"orthoxfer study: {plan.total_rows()} rows = rows per seed ({per_rung}) x {seeds} seeds ({first_seed}..{first_seed + seeds - 1})"
    )
    console.print(f"tasks {', '.join(plan.tasks)}; in {run.path}")
    started = time.perf_counter()
    results = [
        run_rung(
            plan,
            rung,
            rows,
            lambda msg: console.print(msg, highlight=False, markup=False),
        )
        for rung in names
    ]
    meta: dict[str, Any] = {
        "title": "orthoxfer study: transfer gains over controls on the ladder of relatedness",
        "rungs": list(names),
        "seeds": plan.seed_list(),
        "model_seed": MODEL_SEED,
        "tasks": list(plan.tasks),
        "size": size,
        "width": plan.width,
        "methods": list(chosen_methods),
        "controls": list(chosen_controls),
        "rung_controls": {r: list(plan.controls(r)) for r in names},
        "settings": {r: plan.rung_config(r) for r in names},
        "machine": machine(dev),
        "processes": distributed.ranks().size,
        "seconds": time.perf_counter() - started,
        "orthoxfer_version": __version__,
        **({"summarised_with": code_version()} if summarise else {}),
    }
    if (own := source_ceiling(plan)) is not None:
        meta["source_ceiling"] = own
    if run.writes:
        files = write_study(run.path, summarise_study(results, list(chosen_methods), meta))
        print_wrote(meta["seconds"], files)
