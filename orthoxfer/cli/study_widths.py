"""``orthoxfer study-widths``: several studies, one per model width, in one report of transfer gain against width.

A study is one width (``orthoxfer study --width W``, hours per width), so the widths are
run one at a time, each into its own folder; this command reads their study.json files
and computes nothing new (:mod:`orthoxfer.report.widths`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orthoxfer.cli.common import console, print_wrote, reports_errors


@reports_errors
def study_widths_command(
    folders: Annotated[
        list[Path], typer.Argument(help="Study folders, one per width, each with the study.json `study --width` wrote.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Where widths.json, widths.md and gain_vs_width.png are written.")
    ] = Path("benchmarks/results/study-widths"),
) -> None:
    """Transfer gain against model width: per rung and method, the gain over its control, 95% interval.

    Reads each folder's study.json (one width each, the same tasks). Prints
    a table per rung and the regime's checks per width on the data rung
    (few-shot FT >= target only + 10, direct addition within 1.5 of target
    only, ceiling >= few-shot FT + 10; the ceiling needs the same rung).
    Writes widths.json, widths.md and gain_vs_width.png (one panel per
    rung) under --out.
    """
    from orthoxfer.report.widths import grids, load_studies, summarise_widths, write_widths

    summary = summarise_widths(load_studies(folders))
    for grid in grids(summary):
        console.print(grid)
    print_wrote(None, write_widths(out, summary))
