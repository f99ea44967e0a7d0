"""``orthoxfer baseline target|direct|fewshot-ft``: the paper's baselines, one command each.

Each writes ``results.json`` (test accuracy per task and mean, plus what was chosen)
and ``config.json`` into ``--out``. The few-shot pools are drawn exactly as
``orthoxfer align`` draws them (same ``--shots`` and ``--seed``: same images), and
lambda is chosen on a held-out part of those pools (the mini suite: on its fixed
validation sets, apart from every pool), never on test data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orthoxfer.artifacts import write_json
from orthoxfer.cli.common import (
    VAL_FRACTION,
    comma_floats,
    comma_list,
    command_suite,
    console,
    reports_errors,
    resolve_device,
)
from orthoxfer.errors import UsageError
from orthoxfer.terminal import Grid
from orthoxfer.version import __version__

Opt = typer.Option
baseline_app = typer.Typer(
    help="The baselines transfers are compared against: target only, direct addition, few-shot FT.",
    no_args_is_help=True,
)

Target = Annotated[
    str,
    Opt(
        "--target",
        help="Target model: ARCH:TAG, ARCH:/path, ARCH:none, hf-hub:owner/repo, a transformers CLIP folder; mini:b with --suite mini.",
    ),
]
DataRoot = Annotated[Path | None, Opt("--data-root", help="paper: folder holding the datasets (see `data check`).")]
SuiteName = Annotated[str, Opt("--suite", help="paper (datasets under --data-root) | mini (offline).")]
Size = Annotated[str, Opt("--size", help="mini: full | micro (seconds; for smoke tests).")]
Tasks = Annotated[str | None, Opt("--tasks", help="Comma-separated tasks.")]
Shots = Annotated[
    int | None,
    Opt(
        "--shots",
        min=2,
        help="Few-shot images per task (train split), drawn as `align` draws them (default 100; 24 for --size micro).",
    ),
]
Seed = Annotated[int, Opt("--seed", help="Seed of the few-shot draw (and of training).")]
Device = Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")]
Out = Annotated[Path | None, Opt("--out", help="Run folder (default runs/baseline-<name>).")]
Overwrite = Annotated[bool, Opt("--overwrite", help="Replace a run already in --out.")]
CacheDir = Annotated[
    Path | None,
    Opt("--cache-dir", help="Weights cache (paper; heads go to <cache-dir>/heads), or the mini suite's cache."),
]
HeadsDir = Annotated[Path | None, Opt("--heads-dir", help="paper: zero-shot head cache.")]
BatchSize = Annotated[int, Opt("--eval-batch-size", min=1, help="Images per evaluation batch.")]


def _names(tasks: str | None, fallback: list[str] | None = None) -> list[str]:
    names = list(comma_list(tasks) or fallback or [])
    if not names:
        raise UsageError(
            "--tasks names no task; give e.g. --tasks EuroSAT,MNIST (or surfaces,relief with --suite mini)"
        )
    return names


def _suite(name: str, data_root: Path | None, size: str, device: str, cache_dir, heads_dir):
    dev = resolve_device(device)
    return command_suite(name, dev, size=size, cache_dir=cache_dir, data_root=data_root, heads_dir=heads_dir), dev


def _prepare(suite, target: str, names: list[str], dev, batch_size: int, shots: int | None = None, seed: int = 0):
    """Test data first (missing data fails before any model loads), then the target and its test sets."""
    data = suite.test_data(names)
    loaded = suite.load(target, dev)
    return loaded, suite.test_sets(loaded, data, batch_size, dev, shots=shots, seed=seed)


def _pools(suite, loaded, names: list[str], shots: int, seed: int, val_fraction: float):
    """The few-shot pools ``align`` would draw, and (when ``val_fraction`` > 0) their train / validation parts."""
    pools = suite.fewshot_tasks(loaded, names, shots, None, seed)
    if val_fraction <= 0:
        return pools, None
    parts = {name: pool.split(val_fraction, seed) for name, pool in pools.items()}
    return {n: p[0] for n, p in parts.items()}, {n: p[1] for n, p in parts.items()}


def _finish(run, baseline: str, target: str, accuracy: dict[str, float], extra: dict[str, Any]) -> None:
    results = {"baseline": baseline, "target": target, "accuracy": accuracy, **extra, "orthoxfer_version": __version__}
    write_json(run.file("results.json"), results)
    table = Grid(f"{baseline} baseline: {target}", ["task", "top-1 %"])
    for name, value in accuracy.items():
        if name != "mean":
            table.add_row(name, f"{100 * value:.2f}")
    table.add_section()
    table.add_row("mean", f"{100 * accuracy['mean']:.2f}")
    console.print(table)
    if extra.get("scale") is not None:
        console.print(f"lambda {extra['scale']:g}, chosen on {extra['chosen_on']}", highlight=False)
    console.print(f"wrote {run.file('results.json')}", highlight=False)


def fewshot_defaults(suite) -> dict[str, Any]:
    """Few-shot FT's settings for ``suite``: the batches `align` would draw (same steps, batch size, augmentation),
    then the suite's ``fewshot_ft`` table (the optimiser)."""
    from orthoxfer.strategies.settings import AlignSettings

    loop = AlignSettings(**suite.settings("align"))
    return {
        "kind": "embed",
        "steps": loop.steps,
        "warmup": loop.warmup,
        "batch_size": loop.batch_size,
        "augment": loop.augment,
        **suite.settings("fewshot_ft"),
    }


@baseline_app.command("target")
@reports_errors
def target_command(
    target: Target,
    data_root: DataRoot = None,
    suite: SuiteName = "paper",
    size: Size = "full",
    tasks: Tasks = None,
    device: Device = "auto",
    out: Out = None,
    overwrite: Overwrite = False,
    cache_dir: CacheDir = None,
    heads_dir: HeadsDir = None,
    eval_batch_size: BatchSize = 256,
) -> None:
    """Target only: the target's zero-shot test accuracy, with its own text-tower heads."""
    from orthoxfer.evaluation.baselines import target_only
    from orthoxfer.runs import Run

    chosen, dev = _suite(suite, data_root, size, device, cache_dir, heads_dir)
    names = _names(tasks, list(chosen.task_names))
    run = Run(out or Path("runs/baseline-target"), overwrite=overwrite)
    run.write_config({"baseline": "target", "target": target, "tasks": names, **chosen.record})
    loaded, tests = _prepare(chosen, target, names, dev, eval_batch_size)
    _finish(run, "target only", target, target_only(loaded.model, tests, dev), {})


@baseline_app.command("direct")
@reports_errors
def direct_command(
    target: Target,
    task_vector: Annotated[
        list[str],
        Opt(
            "--task-vector",
            help="Source task vector (NAME=PATH or PATH; mini:<task> with --suite mini); repeatable, summed.",
        ),
    ],
    data_root: DataRoot = None,
    suite: SuiteName = "paper",
    size: Size = "full",
    tasks: Tasks = None,
    shots: Shots = None,
    seed: Seed = 0,
    val_fraction: Annotated[
        float | None,
        Opt(
            "--val-fraction",
            help="Part of each few-shot pool lambda is chosen on (default "
            f"{VAL_FRACTION:g}); the mini suite chooses on its validation set unless given.",
        ),
    ] = None,
    scales: Annotated[str | None, Opt("--scales", help="Comma-separated lambdas to try (default 0..2).")] = None,
    device: Device = "auto",
    out: Out = None,
    overwrite: Overwrite = False,
    cache_dir: CacheDir = None,
    heads_dir: HeadsDir = None,
    eval_batch_size: BatchSize = 256,
) -> None:
    """Direct addition ("w/o alignment"): the summed source vectors added to the target, lambda chosen on held-out shots."""
    from orthoxfer.cli.align import load_vectors
    from orthoxfer.evaluation.accuracy import evaluate
    from orthoxfer.evaluation.baselines import SCALES, direct_addition
    from orthoxfer.runs import Run
    from orthoxfer.vectors.taskvector import TaskVector

    grid = comma_floats(scales, "--scales") or SCALES
    chosen_suite, dev = _suite(suite, data_root, size, device, cache_dir, heads_dir)
    shots = shots if shots is not None else chosen_suite.default_shots
    chosen_suite.check(target)
    vectors = load_vectors(task_vector, chosen_suite.vector)
    names = _names(tasks, list(vectors))
    run = Run(out or Path("runs/baseline-direct"), overwrite=overwrite)
    run.write_config(
        {
            "baseline": "direct",
            "target": target,
            "task_vectors": task_vector,
            "tasks": names,
            "shots": shots,
            "seed": seed,
            "val_fraction": val_fraction,
            "scales": list(grid),
            **chosen_suite.record,
        }
    )
    loaded, tests = _prepare(chosen_suite, target, names, dev, eval_batch_size, shots, seed)
    vector = TaskVector.sum(vectors.values())
    vector.check_fits(loaded.model)
    validation = chosen_suite.validation_sets(loaded, names) if val_fraction is None else None
    chosen_on = "the suite's validation sets"
    if validation is None:
        fraction = VAL_FRACTION if val_fraction is None else val_fraction
        _, validation = _pools(chosen_suite, loaded, names, shots, seed, fraction)
        if validation is None:
            raise UsageError("--val-fraction must be > 0: lambda is chosen on held-out few-shot data")
        chosen_on = f"a held-out {fraction:g} of each few-shot pool"
    chosen = direct_addition(loaded.model, vector, validation, grid, dev)
    accuracy = evaluate(chosen.model, tests, dev)
    _finish(
        run,
        "direct addition",
        target,
        accuracy,
        {
            "scale": chosen.scale,
            "chosen_on": chosen_on,
            "validation": {str(k): v for k, v in chosen.validation.items()},
        },
    )


@baseline_app.command("fewshot-ft")
@reports_errors
def fewshot_ft_command(
    target: Target,
    data_root: DataRoot = None,
    suite: SuiteName = "paper",
    size: Size = "full",
    tasks: Tasks = None,
    shots: Shots = None,
    seed: Seed = 0,
    config: Annotated[
        Path | None, Opt("--config", help="TOML with a [fewshot_ft] table (e.g. configs/paper.toml).")
    ] = None,
    steps: Annotated[int | None, Opt("--steps", help="Optimiser steps.")] = None,
    lr: Annotated[float | None, Opt("--lr")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Images per step.")] = None,
    augment: Annotated[int | None, Opt("--augment", help="Augmented views per image per epoch.")] = None,
    sites: Annotated[
        str | None, Opt("--sites", help="attn | attn-qkv | attn-out | a glob (the aligners' sites).")
    ] = None,
    val_fraction: Annotated[
        float,
        Opt(
            "--val-fraction",
            help="Hold out this part of each pool for validation; 0 (default) trains on exactly the images "
            "`align` gets and validates on the suite's validation sets where it has them (mini).",
        ),
    ] = 0.0,
    select_every: Annotated[
        int | None,
        Opt(
            "--select-every",
            min=0,
            help="k > 0: score the validation data at the start, every k steps and at the last "
            "step, and keep the update that scored best (ties: the earliest); 0: the last step's.",
        ),
    ] = None,
    device: Device = "auto",
    out: Out = None,
    overwrite: Overwrite = False,
    resume: Annotated[bool, Opt("--resume", help="Continue from the run's checkpoint.")] = False,
    cache_dir: CacheDir = None,
    heads_dir: HeadsDir = None,
    eval_batch_size: BatchSize = 256,
) -> None:
    """Target few-shot fine-tuning ("Target w/ FT"): the target's sites trained on the aligners' few-shot images.

    Steps, batch size and augmentation default to `align`'s, so the same flags and
    seed give both exactly the same batches; the optimiser is the paper's (AdamW 1e-5).
    """
    from orthoxfer.evaluation.accuracy import evaluate
    from orthoxfer.evaluation.baselines import fewshot_finetune
    from orthoxfer.fit.finetune import FinetuneSettings
    from orthoxfer.runs import Run
    from orthoxfer.strategies.settings import read_config

    chosen, dev = _suite(suite, data_root, size, device, cache_dir, heads_dir)
    shots = shots if shots is not None else chosen.default_shots
    values = fewshot_defaults(chosen)
    if config is not None:
        values.update(read_config(config, "fewshot_ft", FinetuneSettings))
    flags = {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "augment": augment,
        "sites": sites,
        "select_every": select_every,
    }
    values.update({k: v for k, v in flags.items() if v is not None}, seed=seed)
    names = _names(tasks, list(chosen.task_names))
    run = Run(out or Path("runs/baseline-fewshot-ft"), overwrite=overwrite, resume=resume)
    run.write_config(
        {
            "baseline": "fewshot-ft",
            "target": target,
            "tasks": names,
            "shots": shots,
            "seed": seed,
            "val_fraction": val_fraction,
            **chosen.record,
            **values,
        }
    )
    loaded, tests = _prepare(chosen, target, names, dev, eval_batch_size, shots, seed)
    settings = FinetuneSettings(**values, device=str(dev), extra={"target": target, "orthoxfer_version": __version__})
    train, validation = _pools(chosen, loaded, names, shots, seed, val_fraction)
    if validation is None:  # nothing held out: the suite's own validation sets where it has them (mini)
        validation = chosen.validation_sets(loaded, names)
    model, vector = fewshot_finetune(loaded.model, train, settings, run, validation)
    vector.save(run.file("task_vector.safetensors"))
    selection = {"selection": vector.meta["selection"]} if "selection" in vector.meta else {}
    _finish(run, "target few-shot FT", target, evaluate(model, tests, dev), {"steps": settings.steps, **selection})
