"""Typer commands and what they share: consoles and the one-line error reporting.

Every command turns orthoxfer's own errors into one red line: exit code 2 when the
input must change (:class:`~orthoxfer.errors.UsageError`), 1 when the work failed,
130 on Ctrl-C; finished artifacts and checkpoints stay on disk in every case. Under
torchrun only rank 0 prints, except errors, which every process reports with its rank.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar, overload

import typer
from rich.text import Text

from orthoxfer.errors import OrthoxferError, OrthoxferWarning, UsageError
from orthoxfer.terminal import err, out, set_quiet

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from orthoxfer.suites.base import Suite

console = out  # markup and emoji off: names print as they are (orthoxfer.terminal.consoles)
err_console = err
VAL_FRACTION = 0.2  # of each few-shot pool, where a suite has no validation set of its own (the paper's)

Budget = Annotated[  # align's and transfer's --method auto share one meaning of its budget
    int | None,
    typer.Option(
        "--budget",
        min=1,
        help="--method auto: optimiser steps per task its trained candidates share by successive halving "
        "(default: align's --steps, transfer's few-shot FT steps, times their number).",
    ),
]

P = ParamSpec("P")
R = TypeVar("R")


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a run the way Ctrl-C does: between atomic writes


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn orthoxfer errors into one line and an exit code; work already written stays on disk."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            _say(f"error{_rank()}", str(exc))
            raise typer.Exit(2) from None
        except OrthoxferError as exc:
            _say(f"error{_rank()}", str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _say(f"interrupted{_rank()}", "finished artifacts and checkpoints stay on disk")
            raise typer.Exit(130) from None

    return wrapper


def _say(label: str, message: str) -> None:
    """One red label and the message as it is (a message quoting ``[x]`` or ``:b:`` keeps them), on one line."""
    err_console.print(Text.assemble((f"{label}:", "bold red"), " ", message), soft_wrap=True)


def _rank() -> str:
    """Which process of a torchrun launch speaks, where it is not rank 0 (from torchrun's ``RANK``: no torch import to fail)."""
    rank = os.environ.get("RANK", "0")
    return f" (rank {rank})" if rank != "0" else ""


def launch(device: str) -> torch.device:
    """``--device`` resolved, and under torchrun this process joined to the others (its GPU, if CUDA); rank 0 alone prints."""
    import rich

    from orthoxfer.fit.distributed import ranks, start

    joined = start(resolve_device(device))
    if not ranks().main:
        set_quiet()  # commands' output and progress bars
        rich.get_console().quiet = True
    return joined


_held: list[warnings.WarningMessage] = []


@contextmanager
def holding_warnings() -> Iterator[None]:
    """Keep the warnings raised inside for :func:`library_warnings` to show or hide.

    Building the app imports the strategies, and with them geoopt, whose import warns
    before any command line is read.
    """
    with warnings.catch_warnings(record=True) as caught:
        yield
    _held.extend(caught)


@contextmanager
def library_warnings(shown: bool) -> Iterator[None]:
    """Hide torch's, open_clip's and other libraries' warnings and log lines unless ``shown`` (``--verbose``).

    They are about the libraries' own futures (torch deprecating ``torch.jit.script``,
    which geoopt calls on import), not about the run; orthoxfer's own warnings
    (:class:`~orthoxfer.errors.OrthoxferWarning`, e.g. an unreadable image) always show.
    Warnings held while the app was built (:func:`holding_warnings`) follow the same rule.
    """
    held, _held[:] = list(_held), []
    for w in held:
        if shown or issubclass(w.category, OrthoxferWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        if not shown:
            warnings.simplefilter("ignore")
            warnings.simplefilter("default", OrthoxferWarning)
            logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def print_wrote(seconds: float | None, files: list) -> None:
    """``N s; wrote:`` and one file a line, never folded: a path stays whole to copy, and greps whole in a log."""
    console.print((f"{seconds:.0f} s; " if seconds is not None else "") + "wrote:")
    for f in files:
        console.print(f"  {f}", soft_wrap=True)


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    return device


def command_suite(
    name: str,
    device: torch.device,
    size: str = "full",
    cache_dir: Path | None = None,
    data_root: Path | None = None,
    heads_dir: Path | None = None,
    augmentation: str = "suite",
) -> Suite:
    """The suite a single-run command names with ``--suite`` (paper or mini), opened with the options given for it."""
    from orthoxfer.suites import open_suite
    from orthoxfer.suites.base import SuiteRequest

    request = SuiteRequest(
        size=size,
        device=device,
        cache_dir=cache_dir,
        data_root=data_root,
        heads_dir=heads_dir,
        augmentation=augmentation,
    )
    return open_suite(name, request)


@overload
def comma_list(text: str) -> tuple[str, ...]: ...
@overload
def comma_list(text: None) -> None: ...
@overload
def comma_list(text: str | None) -> tuple[str, ...] | None: ...
def comma_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,"`` -> ``("a", "b")``; None stays None (the option was not given)."""
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text is not None else None


def comma_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    try:
        return tuple(float(t) for t in comma_list(text)) if text is not None else None
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, got {text!r}") from None
