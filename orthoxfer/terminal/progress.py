"""Progress of a long stage: a live bar in a terminal, plain lines in a log.

A live bar redraws itself with escape codes; written to a file or a pipe, rich leaves
its last frame cut to the width (``100/… 0:00:…``). So where the console is not a
terminal each stage prints whole lines instead: one when it ends, and one every
``every`` seconds while it runs, so that a long stage in a log still shows it is alive.
Both kinds take the same calls (``add_task``, ``update``, ``advance``, ``console``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from orthoxfer.terminal.consoles import err

INTERVAL_S = 60.0  # a plain line at least this often while a stage runs


def stage_progress(enabled: bool = True, console: Console | None = None, every: float = INTERVAL_S):
    """A rich :class:`~rich.progress.Progress` on a terminal, :class:`PlainProgress` otherwise (silent if not ``enabled``).

    Tasks carry one free-text field, ``status`` (loss, validation accuracy), shown after the count.
    """
    console = console or err
    if not enabled:
        return PlainProgress(console, every, silent=True)
    if not console.is_terminal:
        return PlainProgress(console, every)
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@dataclass
class _Stage:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    last_line: float = field(default_factory=time.monotonic)
    reported: bool = False


class PlainProgress:
    """Whole lines for a log: ``description: done/total status (N s)``, when a stage ends and at intervals."""

    def __init__(self, console: Console, every: float = INTERVAL_S, silent: bool = False) -> None:
        self.console = console
        self.every = every
        self.silent = silent
        self._stages: dict[int, _Stage] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        for stage in self._stages.values():
            if not stage.reported and stage.completed:  # a stage cut short still says how far it got
                self._line(stage)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        fields.setdefault("status", "")
        key = len(self._stages)
        self._stages[key] = _Stage(description, total, completed, fields)
        return key

    def update(
        self, task_id: int, *, completed: float | None = None, advance: float | None = None, **fields: Any
    ) -> None:
        stage = self._stages[task_id]
        if completed is not None:
            stage.completed = completed
        if advance is not None:
            stage.completed += advance
        stage.fields.update(fields)
        finished = stage.total is not None and stage.completed >= stage.total
        if finished and not stage.reported:
            stage.reported = True
            self._line(stage)
        elif not finished and time.monotonic() - stage.last_line >= self.every:
            self._line(stage)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _line(self, stage: _Stage) -> None:
        stage.last_line = time.monotonic()
        if self.silent:
            return
        count = f"{stage.completed:g}" + (f"/{stage.total:g}" if stage.total is not None else "")
        status = stage.fields.get("status", "")
        elapsed = time.monotonic() - stage.started
        self.console.print(Text(f"{stage.description}: {count}{' ' + status if status else ''} ({elapsed:.0f} s)"))
