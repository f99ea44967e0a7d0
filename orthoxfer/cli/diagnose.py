"""``orthoxfer diagnose``: did a transfer keep norm and rank, how orthogonal is U, how far did it rotate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orthoxfer.cli.common import command_suite, console, print_json, reports_errors, resolve_device


@reports_errors
def diagnose_command(
    task_vector: Annotated[str, typer.Option("--task-vector", help="The source task vector: a file, or mini:<task>.")],
    alignment: Annotated[Path, typer.Option("--alignment", help="An alignment .safetensors file.")],
    oracle: Annotated[str | None, typer.Option("--oracle", help="The target's own task vector, for cosines.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task whose U's to use (per-task alignments).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write diagnostics.json and PNG plots here.")] = None,
    site: Annotated[
        str | None, typer.Option("--site", help="Site for the singular-value plot (default: the first).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    size: Annotated[str, typer.Option("--size", help="Which mini suite mini:<task> names: full | micro.")] = "full",
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="The mini suite's cache.")] = None,
) -> None:
    """Norm, rank and orthogonality of a transfer, per site and aggregated."""
    from orthoxfer.alignment.artifact import Alignment
    from orthoxfer.evaluation.diagnostics import diagnose as run_diagnose
    from orthoxfer.evaluation.diagnostics import report_table, write_report

    read = command_suite(
        "mini", resolve_device("cpu"), size=size, cache_dir=cache_dir
    ).vector  # a file, or a mini suite's name
    tv = read(task_vector)
    al = Alignment.load(alignment)
    report = run_diagnose(tv, al, read(oracle) if oracle else None, task)
    if out is not None:
        files = write_report(report, tv, al, out, site)
    if as_json:
        print_json(report)
        return
    console.print(report_table(report))
    if out is not None:
        console.print(f"wrote {', '.join(str(f) for f in files)}")
