"""The ``orthoxfer`` command line: thin commands over the Python API.

Every command turns orthoxfer's own errors into one red line (see
:func:`orthoxfer.commands.reports_errors`). Larger commands live in
:mod:`orthoxfer.commands` and are registered here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orthoxfer import __version__
from orthoxfer.commands import console, print_json, reports_errors
from orthoxfer.commands.align import align_command
from orthoxfer.commands.baseline import baseline_app
from orthoxfer.commands.bench import bench_command, demo_command
from orthoxfer.commands.bench_speed import bench_speed_command
from orthoxfer.commands.data import data_app
from orthoxfer.commands.evaluate import eval_command
from orthoxfer.commands.finetune import finetune_command
from orthoxfer.commands.relate import relate_command

app = typer.Typer(
    name="orthoxfer",
    help="Carry task vectors between independently pre-trained models with orthogonal similarity transforms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(baseline_app, name="baseline")
app.command("eval")(eval_command)
app.command("align")(align_command)
app.command("finetune")(finetune_command)
app.command("bench")(bench_command)
app.command("demo")(demo_command)
app.command("bench-speed")(bench_speed_command)
app.command("relate")(relate_command)
@app.command()
def version() -> None:
    """Print the orthoxfer version."""
    typer.echo(__version__)


@app.command()
@reports_errors
def inspect(
    task_vector: Annotated[Path, typer.Argument(help="A task vector .safetensors file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a task vector's sites: shape, kind, Frobenius norm and numerical rank."""
    from orthoxfer.taskvector import TaskVector

    tv = TaskVector.load(task_vector)
    norms, ranks = tv.norms(), tv.ranks()
    rows = [
        {"site": s, "shape": list(tv.shape(s)), "kind": tv.kind, "norm": norms[s], "rank": ranks[s]}
        for s in tv.sites
    ]
    total = {
        "sites": len(rows),
        "norm": math.sqrt(sum(n * n for n in norms.values())),
        "parameters": sum(r["shape"][0] * r["shape"][1] for r in rows),
        "extra_parameters": sum(t.numel() for t in tv.extra.values()),
    }
    if as_json:
        print_json({"meta": tv.meta, "sites": rows, "total": total})
        return
    table = Table(title=f"{task_vector}  ({tv.kind}, {', '.join(tv.meta.get('tasks', [])) or 'no task named'})")
    for col in ("site", "shape", "kind", "||dW||_F", "rank"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for r in rows:
        table.add_row(r["site"], "x".join(map(str, r["shape"])), r["kind"], f"{r['norm']:.4g}", str(r["rank"]))
    table.add_section()
    table.add_row(f"total: {total['sites']} sites", f"{total['parameters']:,}", "", f"{total['norm']:.4g}", "")
    console.print(table)
    if tv.extra:
        console.print(f"plus {len(tv.extra)} non-site parameters ({total['extra_parameters']:,} values), added unaligned")



@app.command()
@reports_errors
def diagnose(
    task_vector: Annotated[Path, typer.Option("--task-vector", help="The source task vector.")],
    alignment: Annotated[Path, typer.Option("--alignment", help="An alignment .safetensors file.")],
    oracle: Annotated[Path | None, typer.Option("--oracle", help="The target's own task vector, for cosines.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task whose U's to use (per-task alignments).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write diagnostics.json and PNG plots here.")] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site for the singular-value plot (default: the first).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Norm, rank and orthogonality of a transfer, per site and aggregated."""
    from orthoxfer.alignment import Alignment
    from orthoxfer.diagnostics import diagnose as run_diagnose
    from orthoxfer.diagnostics import report_table, write_report
    from orthoxfer.taskvector import TaskVector

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
