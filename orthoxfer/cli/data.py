"""``orthoxfer data check``: which of the paper's datasets a data root holds, and how to add the rest."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orthoxfer.cli.common import reports_errors

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
        console = Console()
        table = Table(title=f"datasets under {data_root}")
        table.add_column("dataset")
        table.add_column("status")
        for split in SPLITS:
            table.add_column(split, justify="right")
        for c in checks:
            status = "[green]found[/]" if c.found else "[red]missing[/]"
            table.add_row(c.name, status, *(f"{c.counts[s]:,}" if s in c.counts else "-" for s in SPLITS))
        console.print(table)
        for c in checks:
            if not c.found:
                console.print(f"\n[bold]{c.name}[/] missing: ", end="", highlight=False)
                console.print(c.problem, highlight=False, soft_wrap=True, markup=False)
                console.print(f"  expected under {data_root}:", highlight=False)
                for line in c.layout.splitlines():
                    console.print(f"    {line}", highlight=False, soft_wrap=True, markup=False)
                console.print(f"  source: {c.source}", highlight=False, soft_wrap=True, markup=False)
    if not all(c.found for c in checks):
        raise typer.Exit(1)
