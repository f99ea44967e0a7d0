"""``orthoxfer eval``: zero-shot accuracy of a model, optionally carrying a task vector, on the paper's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orthoxfer.artifacts import write_json
from orthoxfer.cli.common import reports_errors, resolve_device
from orthoxfer.data.classnames import CLASSNAMES
from orthoxfer.errors import UsageError
from orthoxfer.version import __version__


@reports_errors
def eval_command(
    model: Annotated[str, typer.Option("--model", help="ARCH:TAG, ARCH:/path/to/checkpoint or ARCH:none.")],
    data_root: Annotated[Path, typer.Option("--data-root", help="Folder holding the datasets (see `data check`).")],
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated dataset names.")] = ",".join(CLASSNAMES),
    task_vector: Annotated[
        Path | None, typer.Option("--task-vector", help="Task vector .safetensors added to the model first.")
    ] = None,
    scale: Annotated[float, typer.Option("--scale", help="Scaling coefficient lambda of the task vector.")] = 1.0,
    out: Annotated[Path, typer.Option("--out", help="Run folder; results.json is written there.")] = Path("runs/eval"),
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Weights cache (default: open_clip's and Hugging Face's).")
    ] = None,
    heads_dir: Annotated[
        Path | None, typer.Option("--heads-dir", help="Zero-shot head cache (default: $ORTHOXFER_CACHE/heads).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 256,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="DataLoader workers.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Top-1 accuracy per task and their mean; heads come from the model's own text tower."""
    from orthoxfer.data.paper import DATASETS
    from orthoxfer.evaluation.accuracy import evaluate_scores, mean_accuracies
    from orthoxfer.models.loading import load_model
    from orthoxfer.suites.paper import paper_test_sets, paper_test_splits
    from orthoxfer.vectors.taskvector import TaskVector

    names = [t for t in tasks.split(",") if t.strip()]
    if not names:
        raise UsageError("--tasks names no dataset; choose from " + ", ".join(DATASETS))
    target = resolve_device(device)
    splits = paper_test_splits(names, data_root)  # fail on missing data before loading
    tv = TaskVector.load(task_vector) if task_vector is not None else None
    loaded = load_model(model, cache_dir=cache_dir, device=target)
    if tv is not None:
        tv.check_fits(loaded.model)  # a mismatched vector fails before any head is computed
    loaders = paper_test_sets(loaded, splits, batch_size, target, workers, heads_dir)
    if tv is not None:
        tv.apply_to(loaded.model, scale)
    scores = evaluate_scores(loaded.model, loaders, target, progress=progress)
    accuracies = mean_accuracies(scores)
    results = {
        "model": loaded.spec,
        "checkpoint": str(loaded.checkpoint) if loaded.checkpoint is not None else None,
        "quick_gelu": loaded.quick_gelu,
        "task_vector": str(task_vector) if task_vector is not None else None,
        "scale": scale if task_vector is not None else None,
        "data_root": str(data_root),
        "accuracy": accuracies,
        "counts": {
            n: {"correct": s.correct, "total": s.total, "skipped_unreadable": s.skipped} for n, s in scores.items()
        },
        "orthoxfer_version": __version__,
    }
    write_json(out / "results.json", results)

    table = Table(title=f"{loaded.spec}" + (f" + {scale:g} x {task_vector.name}" if task_vector else ""))
    for column in ("task", "top-1 %", "images", "skipped"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, s in scores.items():
        table.add_row(name, f"{100 * s.accuracy:.2f}", f"{s.total:,}", str(s.skipped))
    table.add_section()
    table.add_row("mean", f"{100 * accuracies['mean']:.2f}", "", "")
    console = Console()
    console.print(table)
    console.print(f"wrote {out / 'results.json'}", highlight=False)
