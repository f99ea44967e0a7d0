"""``orthoxfer diagnose``: did a transfer keep norm and rank, how orthogonal is U, how far did it rotate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orthoxfer.cli.common import console, print_json, reports_errors


@reports_errors
def diagnose_command(
    task_vector: Annotated[Path, typer.Option("--task-vector", help="The source task vector.")],
    alignment: Annotated[Path, typer.Option("--alignment", help="An alignment .safetensors file.")],
    oracle: Annotated[Path | None, typer.Option("--oracle", help="The target's own task vector, for cosines.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task whose U's to use (per-task alignments).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write diagnostics.json and PNG plots here.")] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site for the singular-value plot (default: the first).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Norm, rank and orthogonality of a transfer, per site and aggregated."""
    from orthoxfer.alignment.artifact import Alignment
    from orthoxfer.evaluation.diagnostics import diagnose as run_diagnose
    from orthoxfer.evaluation.diagnostics import report_table, write_report
    from orthoxfer.vectors.taskvector import TaskVector

    tv = TaskVector.load(task_vector)
    al = Alignment.load(alignment)
    report = run_diagnose(tv, al, TaskVector.load(oracle) if oracle else None, task)
    if out is not None:
        files = write_report(report, tv, al, out, site)
    if as_json:
        print_json(report)
        return
    console.print(report_table(report))
    if out is not None:
        console.print(f"wrote {', '.join(str(f) for f in files)}")
