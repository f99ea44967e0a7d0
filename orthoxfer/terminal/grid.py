"""A table that fits the width it is printed at, and never cuts a cell.

rich shrinks a table that is too wide by cutting its cells (``pen…``, ``1.53e…``):
names and numbers are lost. A :class:`Grid` instead measures its columns when it is
rendered and, where they do not fit, prints them as several tables, each repeating the
leading key columns (the method, the site) so that every part reads on its own. Where
not even the keys and one more column fit, each row becomes a small table of
``column | value`` pairs. Every cell is a :class:`~rich.text.Text`, so data is never
read as markup, and columns fold rather than cut if a single cell is wider than the
screen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

COLUMN_COST = 3  # a column's padding (one space each side) and its border
EDGE = 1  # the table's closing border


@dataclass
class Grid:
    """Heads and rows of strings; the first ``keys`` columns are left-aligned and repeated in every part."""

    title: str
    heads: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    keys: int = 1
    sections: set[int] = field(default_factory=set)  # row indices a rule is drawn above (a total, a mean)
    caption: str | None = None

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def add_section(self) -> None:
        self.sections.add(len(self.rows))

    def widths(self) -> list[int]:
        return [max([cell_len(h), *(cell_len(r[i]) for r in self.rows)]) for i, h in enumerate(self.heads)]

    def parts(self, width: int) -> list[list[int]]:
        """The column indices of each table printed at ``width`` (keys first in each); [] when even one column does not fit."""
        sizes = self.widths()
        key_cost = EDGE + sum(w + COLUMN_COST for w in sizes[: self.keys])
        rest = list(range(self.keys, len(sizes)))
        if any(key_cost + sizes[i] + COLUMN_COST > width for i in rest) or key_cost > width:
            return []
        parts: list[list[int]] = []
        current, used = list(range(self.keys)), key_cost
        for i in rest:
            if used + sizes[i] + COLUMN_COST > width and len(current) > self.keys:
                parts.append(current)
                current, used = list(range(self.keys)), key_cost
            current.append(i)
            used += sizes[i] + COLUMN_COST
        parts.append(current)
        return parts

    def tables(self, width: int) -> Iterator[Table | Text]:
        parts = self.parts(width)
        if not parts:
            yield from self._records()
            return
        for n, cols in enumerate(parts):
            title = self.title if len(parts) == 1 else f"{self.title} ({n + 1}/{len(parts)})"
            table = Table(
                title=Text(title), caption=Text(self.caption) if self.caption and n == len(parts) - 1 else None
            )
            for i in cols:
                table.add_column(Text(self.heads[i]), justify="left" if i < self.keys else "right", overflow="fold")
            for k, row in enumerate(self.rows):
                if k in self.sections:
                    table.add_section()
                table.add_row(*(Text(row[i]) for i in cols))
            yield table

    def _records(self) -> Iterator[Table | Text]:
        """Narrower than a key and one value: one two-column table per row, titled by its keys."""
        yield Text(self.title)
        for row in self.rows:
            table = Table(title=Text(" ".join(row[: self.keys])), show_header=False)
            table.add_column(overflow="fold")
            table.add_column(overflow="fold", justify="right")
            for i in range(self.keys, len(self.heads)):
                table.add_row(Text(self.heads[i]), Text(row[i]))
            yield table
        if self.caption:
            yield Text(self.caption)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.tables(options.max_width)
