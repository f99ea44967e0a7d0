"""A strategy's own settings, declared where the strategy is written.

A strategy lists the :class:`Option` s it reads (``penalty``: its weight and form;
``riemannian``: its retraction); :class:`~orthoxfer.strategies.settings.AlignSettings`,
TOML validation and the ``align``/``bench`` flags are generated from these declarations,
so a strategy with a setting of its own is one file and one registry line, as a
constraint is one class in ``torch.nn.utils.parametrize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orthoxfer.errors import UsageError


@dataclass(frozen=True)
class Option:
    """One setting: its name (``snake_case``; the flag is ``--kebab-case``), default, help, and admissible values."""

    name: str
    default: bool | int | float | str
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> Any:
        """``value`` if this option admits it (an int where a float is declared is widened), else a UsageError."""
        expected = self.type
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if expected is float and is_number:
            value = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UsageError(f"{self.flag} must be {expected.__name__}, got {type(value).__name__} {value!r}")
        if self.choices and value not in self.choices:
            raise UsageError(f"unknown {self.flag[2:]} {value!r}; choose one of {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise UsageError(f"{self.flag} must be >= {self.minimum:g}, got {value}")
        return value
