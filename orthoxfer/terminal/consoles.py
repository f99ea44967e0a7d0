"""The two consoles orthoxfer prints through, and whether the user asked for more detail.

Model, task and path names are data: ``mini:b: top-1`` must not become an emoji and
``[joint]`` must not vanish as a markup tag, so both consoles read neither markup nor
emoji, and do not colour numbers (``highlight``) either. Styled text is built as
:class:`rich.text.Text`. A console whose output is not a terminal (a log, ``| tee``,
CI) is 80 columns wide unless ``COLUMNS`` says otherwise: rich would otherwise take the
width of whatever terminal stdin happens to be, and a log should read the same everywhere.
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

LOG_WIDTH = 80


class PlainConsole(Console):
    """A rich console with markup and emoji off, 80 columns wide when it does not write to a terminal."""

    def __init__(self, **kwargs) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(min(dims.width, LOG_WIDTH), dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]  # mypy types a property with a setter as overloaded; fset exists


out = PlainConsole()  # results: tables, "wrote ..." lines
err = PlainConsole(stderr=True)  # progress, notes and errors, so that `> file` keeps only results

_verbose = False


def set_verbose(shown: bool) -> None:
    """``orthoxfer --verbose``: per-epoch validation lines and library warnings are shown."""
    global _verbose
    _verbose = shown


def is_verbose() -> bool:
    return _verbose


def set_quiet(quiet: bool = True) -> None:
    """Silence both consoles (every process of a torchrun launch but rank 0)."""
    out.quiet = err.quiet = quiet
