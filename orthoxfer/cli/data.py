"""``orthoxfer data check``: which of the paper's datasets a data root holds, and how to add the rest."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from orthoxfer.cli.common import console, reports_errors
from orthoxfer.terminal import Grid

data_app = typer.Typer(help="Inspect the local data root of the paper's eight datasets.", no_args_is_help=True)


@data_app.command("check")
@reports_errors
def check(
    data_root: Annotated[Path, typer.Option("--data-root", help="Folder holding the datasets.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per dataset: found or missing, images per split, and the exact layout expected for what is missing.

    Exits with 1 when a dataset is missing, 0 when all eight are usable.
    """
    from orthoxfer.data.paper import SPLITS, check_data_root

    checks = check_data_root(data_root)
    if as_json:
        typer.echo(json.dumps([{**asdict(c), "found": c.found} for c in checks], indent=2))
    else:
        table = Grid(f"datasets under {data_root}", ["dataset", "status", *SPLITS])
        for c in checks:
            status = "found" if c.found else "missing"
            table.add_row(c.name, status, *(f"{c.counts[s]:,}" if s in c.counts else "-" for s in SPLITS))
        console.print(table)
        for c in checks:
            if not c.found:
                console.print()
                console.print(Text.assemble((c.name, "bold"), " missing: ", c.problem or ""))
                console.print(f"  expected under {data_root}:")
                for line in c.layout.splitlines():
                    console.print(f"    {line}", soft_wrap=True)  # a layout line keeps its shape
                console.print(f"  source: {c.source}")
    if not all(c.found for c in checks):
        raise typer.Exit(1)
