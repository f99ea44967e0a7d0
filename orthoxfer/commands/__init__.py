"""Typer commands and what they share: consoles and the one-line error reporting.

Every command turns orthoxfer's own errors into one red line: exit code 2 when the
input must change (:class:`~orthoxfer.errors.UsageError`), 1 when the work failed,
130 on Ctrl-C; finished artifacts and checkpoints stay on disk in every case.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from orthoxfer.errors import OrthoxferError, UsageError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)


def reports_errors(fn: F) -> F:
    """Turn orthoxfer errors into one line and an exit code; work already written stays on disk."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OrthoxferError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: finished artifacts and checkpoints stay on disk")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))
