"""``orthoxfer eval``: accuracy of a model, optionally carrying a task vector, on a suite's tasks (the paper's or mini)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orthoxfer.artifacts import write_json
from orthoxfer.cli.common import comma_list, command_suite, console, reports_errors, resolve_device
from orthoxfer.errors import UsageError
from orthoxfer.terminal import Grid
from orthoxfer.version import __version__


@reports_errors
def eval_command(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="ARCH:TAG, ARCH:/path/to/checkpoint, ARCH:none, hf-hub:owner/repo, a transformers CLIP folder; "
            "mini:a or mini:b with --suite mini.",
        ),
    ],
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="paper: folder holding the datasets (see `data check`).")
    ] = None,
    suite: Annotated[
        str, typer.Option("--suite", help="paper (datasets under --data-root) | mini (offline).")
    ] = "paper",
    size: Annotated[str, typer.Option("--size", help="mini: full | micro (seconds; for smoke tests).")] = "full",
    tasks: Annotated[
        str | None, typer.Option("--tasks", help="Comma-separated task names (default: all of the suite's).")
    ] = None,
    task_vector: Annotated[
        str | None,
        typer.Option("--task-vector", help="Task vector .safetensors (or mini:<task>) added to the model first."),
    ] = None,
    scale: Annotated[float, typer.Option("--scale", help="Scaling coefficient lambda of the task vector.")] = 1.0,
    out: Annotated[Path, typer.Option("--out", help="Run folder; results.json is written there.")] = Path("runs/eval"),
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Weights cache (default: open_clip's and Hugging Face's), or the mini suite's cache."
        ),
    ] = None,
    heads_dir: Annotated[
        Path | None,
        typer.Option(
            "--heads-dir", help="paper: zero-shot head cache (default: <cache-dir>/heads, else $ORTHOXFER_CACHE/heads)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 256,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="DataLoader workers.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Top-1 accuracy per task and their mean; heads come from the model itself (paper: its text tower)."""
    from orthoxfer.evaluation.accuracy import evaluate_scores, mean_accuracies

    target = resolve_device(device)
    chosen = command_suite(suite, target, size=size, cache_dir=cache_dir, data_root=data_root, heads_dir=heads_dir)
    names = list(comma_list(tasks) or chosen.task_names)
    if not names:
        raise UsageError("--tasks names no task; choose from " + ", ".join(chosen.task_names))
    chosen.check(model)
    data = chosen.test_data(names)  # fail on missing data before loading
    tv = chosen.vector(task_vector) if task_vector is not None else None
    loaded = chosen.load(model, target)
    if tv is not None:
        tv.check_fits(loaded.model)  # a mismatched vector fails before any head is computed
    loaders = chosen.test_sets(loaded, data, batch_size, target, workers)
    if tv is not None:
        tv.apply_to(loaded.model, scale)
    scores = evaluate_scores(loaded.model, loaders, target, progress=progress)
    accuracies = mean_accuracies(scores)
    results = {
        "model": loaded.spec,
        "checkpoint": str(loaded.checkpoint) if loaded.checkpoint is not None else None,
        "quick_gelu": loaded.quick_gelu,
        "task_vector": task_vector,
        "scale": scale if task_vector is not None else None,
        **chosen.record,
        "accuracy": accuracies,
        "counts": {
            n: {"correct": s.correct, "total": s.total, "skipped_unreadable": s.skipped} for n, s in scores.items()
        },
        "orthoxfer_version": __version__,
    }
    write_json(out / "results.json", results)

    table = Grid(
        f"{loaded.spec}" + (f" + {scale:g} x {Path(task_vector).name}" if task_vector else ""),
        ["task", "top-1 %", "images", "skipped"],
    )
    for name, s in scores.items():
        table.add_row(name, f"{100 * s.accuracy:.2f}", f"{s.total:,}", str(s.skipped))
    table.add_section()
    table.add_row("mean", f"{100 * accuracies['mean']:.2f}", "", "")
    console.print(table)
    console.print(f"wrote {out / 'results.json'}")
