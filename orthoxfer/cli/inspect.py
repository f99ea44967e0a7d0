"""``orthoxfer inspect``: what a task vector holds, site by site."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from orthoxfer.cli.common import console, print_json, reports_errors
from orthoxfer.terminal import Grid


@reports_errors
def inspect_command(
    task_vector: Annotated[Path, typer.Argument(help="A task vector .safetensors file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a task vector's sites: shape, kind, Frobenius norm and numerical rank."""
    from orthoxfer.vectors.taskvector import TaskVector

    tv = TaskVector.load(task_vector)
    norms, ranks = tv.norms(), tv.ranks()
    rows: list[dict[str, Any]] = [
        {"site": s, "shape": list(tv.shape(s)), "kind": tv.kind, "norm": norms[s], "rank": ranks[s]} for s in tv.sites
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
    table = Grid(
        f"{task_vector}  ({tv.kind}, {', '.join(tv.meta.get('tasks', [])) or 'no task named'})",
        ["site", "shape", "kind", "||dW||_F", "rank"],
    )
    for r in rows:
        table.add_row(r["site"], "x".join(map(str, r["shape"])), r["kind"], f"{r['norm']:.4g}", str(r["rank"]))
    table.add_section()
    table.add_row(f"total: {total['sites']} sites", f"{total['parameters']:,}", "", f"{total['norm']:.4g}", "")
    console.print(table)
    if tv.extra:
        console.print(
            f"plus {len(tv.extra)} non-site parameters ({total['extra_parameters']:,} values), added unaligned"
        )
