"""``orthoxfer bench`` and ``orthoxfer demo``: the paper's Table 1, on the real suite or the offline miniature.

Settings resolve as the suite's defaults <- ``--config FILE.toml`` <- flags
(:func:`orthoxfer.experiments.bench_settings.resolve_bench`, shared with ``study``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from orthoxfer.cli.common import comma_floats, comma_list, console, launch, print_wrote, reports_errors
from orthoxfer.errors import UsageError
from orthoxfer.version import __version__

Opt = typer.Option


@reports_errors
def bench_command(
    suite: Annotated[
        str,
        Opt(
            "--suite",
            help="mini (offline, built here) | planted (positive control: the target is the "
            "source with a known permutation planted) | paper (datasets under --data-root).",
        ),
    ] = "mini",
    pair: Annotated[
        str | None,
        Opt(
            "--pair",
            help="mini only: the target's rung on the ladder of relatedness to model A: "
            "same (A itself) | release (A pre-trained on, on corpus b) | seed (A's corpus, another "
            "seed) | data (model B: another corpus and seed; the default).",
        ),
    ] = None,
    config: Annotated[
        Path | None, Opt("--config", help="TOML settings (e.g. configs/paper.toml); flags override.")
    ] = None,
    methods: Annotated[
        str | None,
        Opt(
            "--methods",
            help="Comma-separated methods: alignment strategies (penalty, riemannian, "
            "cayley, procrustes) and transfer methods (gradfix, gradfix-pool: labels; orthogonal-shift, transfusion, "
            "transfusion-reference: no data; theseus, bico, direct-residual: images).",
        ),
    ] = None,
    kinds: Annotated[str | None, Opt("--kinds", help="Task-vector kinds: embed,lora.")] = None,
    controls: Annotated[
        str | None,
        Opt(
            "--controls",
            help="Control rows: norm,spectrum,orbit,other-task (orbit only beside methods that do not fit U^T dW U).",
        ),
    ] = None,
    procrustes_init: Annotated[
        bool | None,
        Opt("--procrustes-init/--no-procrustes-init", help="Also each trained strategy started at procrustes."),
    ] = None,
    tune_from: Annotated[
        str | None,
        Opt(
            "--tune-from",
            help="Transfer-then-tune rows: few-shot FT started from the vector carried by each of these "
            "(direct, or a transfer method such as transfusion); per-task mode.",
        ),
    ] = None,
    auto: Annotated[
        bool | None,
        Opt("--auto/--no-auto", help="The auto row: per task, the row best on validation (per-task mode)."),
    ] = None,
    anchored: Annotated[
        str | None,
        Opt(
            "--anchored",
            help="Anchored rows of each trained strategy, one per start given (identity, procrustes or a transfer "
            "method): U kept near its start (beta: [bench] anchor) and its step chosen on validation (every "
            "[bench] select_every steps).",
        ),
    ] = None,
    seeds: Annotated[
        int, Opt("--seeds", min=1, help="Repeat with seeds 0..N-1 (pre-training too on mini); mean and 95% interval.")
    ] = 1,
    steps: Annotated[
        int | None, Opt("--steps", help="Alignment and few-shot FT steps (mini, planted: 100 per task run).")
    ] = None,
    lr: Annotated[float | None, Opt("--lr", help="Alignment learning rate.")] = None,
    mode: Annotated[
        str | None,
        Opt(
            "--mode",
            help="joint (the summed vectors, one lambda: the reference code; default for "
            "paper) | per-task (each task its own vector, U's and lambda, the same total steps; "
            "default for mini and planted, whose summed vectors interfere: see docs/mini-suite.md) | "
            "per-task-summed (each task its own U's, the carried vectors summed into one model "
            "scored on every task: the paper's text); [align] mode of --config overrides the default.",
        ),
    ] = None,
    scales: Annotated[
        str | None,
        Opt(
            "--scales",
            help="Comma-separated lambda grid, chosen on held-out data; one value fixes lambda "
            "(the paper's text: 1.0). Default: [bench] scales of --config, else 0,0.25,...,2.",
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        Opt(
            "--val-fraction",
            help="paper: the part of each pool held out to choose lambda and lr on; 0 trains on "
            "the whole pool and reads no validation data (one --scales value). Default: [bench] "
            "val_fraction of --config, else 0.2 when something is chosen, 0 when not.",
        ),
    ] = None,
    lrs: Annotated[
        str | None,
        Opt(
            "--lrs",
            help="Comma-separated learning rates every trained row (aligners and few-shot FT) tries; "
            "the best on the validation part of the pools is kept.",
        ),
    ] = None,
    ties: Annotated[
        str | None,
        Opt("--ties", help="Comma-separated tie options (site,block,model): every alignment row once per option."),
    ] = None,
    shots: Annotated[
        int | None,
        Opt(
            "--shots",
            help="Few-shot images per task (paper: a fifth held out for "
            "choosing lambda; mini and planted choose on their validation sets). Default: [align] shots "
            "of --config, else the suite's: paper 100, mini and planted 32, 24 for --size micro.",
        ),
    ] = None,
    augmentation: Annotated[
        str | None,
        Opt(
            "--augmentation",
            help="paper: the pools' augmentation: suite (orthoxfer's: crop 0.5-1, flip, one of "
            "grayscale/solarize/blur) | paper-text (flip, grayscale, blur) | paper-code (crop 0.9-1, "
            "flip, one of grayscale/solarize/blur) | none. Default: [align] augmentation of --config.",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        Opt(
            "--precision",
            help="auto (bf16 autocast on CUDA, float32 elsewhere) | fp32 (W + U^T dW U and the forward in "
            "float32: what lr 1e-5 needs, docs/paper-protocol.md) | bf16 (autocast on any device).",
        ),
    ] = None,
    reference_gelu: Annotated[
        bool,
        Opt(
            "--reference-gelu",
            help="paper: reproduce the released code's bug for comparison with its published numbers: "
            "the target built with GELU although laion400m_e32 was trained with QuickGELU (every MLP of "
            "the target, so every row, shifts; docs/paper-protocol.md). Off by default.",
        ),
    ] = False,
    disjoint_pools: Annotated[
        bool,
        Opt(
            "--disjoint-pools",
            help="mini, planted: draw the pools from a part of the training split the source vectors are "
            "fine-tuned without (by default they overlap, as the paper's do), to measure what the overlap is worth.",
        ),
    ] = False,
    reference_lora_sum: Annotated[
        bool,
        Opt(
            "--reference-lora-sum",
            help="Reproduce the released code's LoRA sum for comparison with its published numbers: "
            "(sum B)(A0 + sum dA) instead of sum BA, with the cross terms B_i dA_j (joint mode; LoRA rows "
            "with real vectors). Off by default.",
        ),
    ] = False,
    tasks: Annotated[str | None, Opt("--tasks", help="Comma-separated tasks (default: all eight).")] = None,
    size: Annotated[str, Opt("--size", help="mini and planted: full | micro (seconds; for smoke tests).")] = "full",
    source: Annotated[str | None, Opt("--source", help="paper only: source model.")] = None,
    target: Annotated[str | None, Opt("--target", help="paper only: target model.")] = None,
    data_root: Annotated[Path | None, Opt("--data-root", help="paper only: the datasets.")] = None,
    vectors_dir: Annotated[
        Path | None, Opt("--vectors", help="paper only: <Task>-<kind>.safetensors source vectors (made if missing).")
    ] = None,
    device: Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[
        Path | None, Opt("--out", help="Run folder (default runs/<suite>, runs/mini-<pair> for another pair).")
    ] = None,
    resume: Annotated[bool, Opt("--resume", help="Reuse rows already computed in --out.")] = False,
    overwrite: Annotated[bool, Opt("--overwrite", help="Start --out afresh.")] = False,
    allow_code_change: Annotated[
        bool, Opt("--allow-code-change", help="Resume rows made by other code (recorded in config.json).")
    ] = False,
    cache_dir: Annotated[
        Path | None, Opt("--cache-dir", help="Where pre-trained mini models, their vectors and heads are cached.")
    ] = None,
    strategy_options: dict[str, Any] | None = None,
) -> None:
    """Run the table: target only, few-shot FT, direct addition, every strategy; per task, with diagnostics.

    On mini and planted, how related source and target are (CKA and Procrustes residual
    per depth) is measured too and written beside the table. Strategy-specific flags
    (--alpha, --rotation-rank, ...) and transfer-method flags (--gradfix-shots,
    --gradfix-vote, --transfusion-rounds) set that option for every row that reads it.
    """
    from orthoxfer.artifacts import write_json
    from orthoxfer.experiments.bench import relatedness
    from orthoxfer.experiments.bench_run import run_bench
    from orthoxfer.experiments.bench_settings import resolve_bench
    from orthoxfer.report.tables import (
        rich_tables,
        summarise_rows,
        transferability_check,
        transferability_line,
        write_results,
    )
    from orthoxfer.runs import Run
    from orthoxfer.suites import SUITES, build_suite, models_record
    from orthoxfer.suites.base import SuiteRequest
    from orthoxfer.suites.mini import DEFAULT_PAIR, check_pair

    if suite not in SUITES:
        raise UsageError(f"unknown suite {suite!r}; choose {', '.join(SUITES)}")
    if pair is not None and suite != "mini":
        raise UsageError(f"--pair is for --suite mini; the {suite} suite names its own target (leave out --pair)")
    if reference_gelu and suite != "paper":
        raise UsageError(f"--reference-gelu is for --suite paper; the {suite} suite's models are built here")
    rung = check_pair(pair) if suite == "mini" else None
    dev = launch(device)
    choices = {
        "methods": comma_list(methods),
        "kinds": comma_list(kinds),
        "controls": comma_list(controls),
        "procrustes_init": procrustes_init,
        "ties": comma_list(ties),
        "lrs": comma_floats(lrs, "--lrs"),
        "mode": mode,
        "tune_from": comma_list(tune_from),
        "auto": auto,
        "anchored": comma_list(anchored),
        "scales": comma_floats(scales, "--scales"),
        "val_fraction": val_fraction,
        "reference_lora_sum": reference_lora_sum or None,  # None: left out of config.json, so older runs resume
    }
    task_names = comma_list(tasks)
    fields = {"augmentation": augmentation, "precision": precision}  # [align] fields, set like the strategies' flags
    strategy_options = {**(strategy_options or {}), **{k: v for k, v in fields.items() if v is not None}}
    settings = resolve_bench(
        suite,
        size,
        dev,
        config,
        shots,
        steps,
        lr,
        strategy_options,
        choices,
        tasks=len(task_names) if task_names else None,
    )
    bench, shots = settings.bench, settings.shots

    other_rung = rung not in (None, DEFAULT_PAIR)  # the default rung is left out of config.json: older runs resume
    run = Run(out or Path("runs") / (f"{suite}-{rung}" if other_rung else suite), overwrite=overwrite, resume=resume)
    resolved = {
        "suite": suite,
        **({"pair": rung} if other_rung else {}),
        "seeds": seeds,
        "shots": shots,
        "size": size,
        **models_record(suite, size),
        **settings.record(),
        **({"reference_gelu": True} if reference_gelu else {}),  # absent when off: older runs resume
        **({"disjoint_pools": True} if disjoint_pools else {}),
    }
    run.write_config(resolved, allow_code_change=allow_code_change)
    started = time.perf_counter()
    records, names, related = [], [], {}
    for seed in range(seeds):
        request = SuiteRequest(
            seed=seed,
            shots=shots,
            size=size,
            pair=pair,
            tasks=task_names,
            kinds=bench.kinds,
            source_ft=settings.source_ft,
            device=dev,
            cache_dir=cache_dir,
            source=source,
            target=target,
            data_root=data_root,
            vectors_dir=vectors_dir,
            augmentation=bench.align.augmentation,
            reference_gelu=reference_gelu,
            disjoint_pools=disjoint_pools,
        )
        inputs = build_suite(suite, request)
        names = [t.name for t in inputs.tasks]
        layers = relatedness(inputs, seed)
        if layers is not None:
            related[str(seed)] = layers
            if run.writes:
                write_json(
                    run.file(f"relate-seed{seed}.json"),
                    {
                        "source": inputs.source_name,
                        "target": inputs.target_name,
                        "pair": rung,
                        "seed": seed,
                        "layers": layers,
                    },
                )
            console.print(
                f"{inputs.source_name} vs {inputs.target_name} (seed {seed}), per depth: CKA "
                + " ".join(f"{r['cka']:.2f}" for r in layers)
                + "; Procrustes residual "
                + " ".join(f"{r['procrustes_residual']:.2f}" for r in layers),
                highlight=False,
            )
        records += run_bench(
            inputs, bench, run, [seed], progress=lambda msg: console.print(msg, highlight=False, markup=False)
        )
    if not run.writes:  # another process of a torchrun launch: rank 0 writes the table
        return
    summary = summarise_rows(records, names)
    meta: dict[str, Any] = {
        "suite": suite,
        **({"pair": rung} if rung else {}),
        "source": inputs.source_name,
        "target": inputs.target_name,
        "seeds": seeds,
        **({"relatedness": related} if related else {}),
        "seconds": time.perf_counter() - started,
        "orthoxfer_version": __version__,
        "title": f"orthoxfer bench: {suite} suite, {inputs.source_name} -> {inputs.target_name}",
    }
    check = transferability_check(records, names)
    files = write_results(run.path, summary, records, names, meta, check)
    for table in rich_tables(summary, names, meta["title"]):
        console.print(table)
    if check:
        console.print(transferability_line(check), highlight=False, markup=False)
    print_wrote(meta["seconds"], files)


@reports_errors
def demo_command(
    seeds: Annotated[
        int,
        Opt(
            "--seeds",
            min=1,
            help="Repeat with seeds 0..N-1 (pre-training too); mean and 95% interval. "
            "The study of what transfers is `orthoxfer study`.",
        ),
    ] = 1,
    controls: Annotated[
        str | None,
        Opt(
            "--controls",
            help="Control rows beside every method: norm,spectrum,orbit,other-task (default: none; orbit skips the trained aligners).",
        ),
    ] = None,
    pair: Annotated[
        str | None,
        Opt(
            "--pair",
            help="The target's rung on the ladder of relatedness to model A: same | "
            "release | seed | data (model B, the default); see `orthoxfer bench --help`.",
        ),
    ] = None,
    tasks: Annotated[
        str | None,
        Opt(
            "--tasks",
            help="Comma-separated mini tasks, or all (default: the four with most "
            "headroom on validation, housenumbers,scenes,relief,pictograms).",
        ),
    ] = None,
    size: Annotated[str, Opt("--size", help="full | micro (seconds; a smoke test).")] = "full",
    out: Annotated[
        Path | None, Opt("--out", help="Run folder (default runs/demo, runs/demo-<pair> for another pair).")
    ] = None,
    cache_dir: Annotated[
        Path | None, Opt("--cache-dir", help="Cache of the pre-trained pair and source vectors.")
    ] = None,
) -> None:
    """The paper's Table 1 in miniature, offline on a CPU: `orthoxfer bench --suite mini` in the paper's regime.

    Rows: target only, few-shot FT, direct addition, every strategy and every
    registered transfer method, with embed vectors, on the four tasks with most room
    between few-shot FT and the ceiling, 100 optimiser steps per task for few-shot FT
    and every aligner alike. Reruns reuse the finished rows in --out; pass a new --out
    to compute them again. --pair picks the target's rung (the default, data, is model
    B: the paper's setting).
    """
    from orthoxfer.data.mini import TASK_NAMES
    from orthoxfer.experiments.bench import BenchConfig
    from orthoxfer.suites.mini import DEFAULT_PAIR, HEADROOM_TASKS, check_pair
    from orthoxfer.transfers.registry import TRANSFERS

    rung = check_pair(pair)
    names = TASK_NAMES if tasks == "all" else comma_list(tasks) or HEADROOM_TASKS
    out = out or Path("runs") / ("demo" if rung == DEFAULT_PAIR else f"demo-{rung}")
    bench_command(
        suite="mini",
        pair=pair,
        seeds=seeds,
        size=size,
        out=out,
        resume=True,
        allow_code_change=True,  # the demo shows the table; config.json records which code made its rows
        cache_dir=cache_dir,
        controls=controls,
        ties=None,
        kinds="embed",
        procrustes_init=False,
        methods=",".join((*BenchConfig.methods, *TRANSFERS)),
        steps=None,
        lr=None,
        lrs=None,
        mode=None,
        scales=None,
        val_fraction=None,
        augmentation=None,
        precision=None,
        reference_gelu=False,
        reference_lora_sum=False,
        strategy_options={},
        tasks=",".join(names),
        source=None,
        target=None,
        data_root=None,
        vectors_dir=None,
        device="cpu",
        config=None,
        shots=None,
        overwrite=False,
    )
