"""The strategy registry: name -> class, the four built-ins first; :func:`register` adds one from anywhere.

A strategy module never imports the registry, so settings can check a method name and
its options against it without an import cycle.
"""

from __future__ import annotations

from orthoxfer.errors import UsageError
from orthoxfer.strategies.base import Strategy
from orthoxfer.strategies.cayley import CayleyStrategy
from orthoxfer.strategies.options import Option
from orthoxfer.strategies.penalty import PenaltyStrategy
from orthoxfer.strategies.procrustes import ProcrustesStrategy
from orthoxfer.strategies.riemannian import RiemannianStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (PenaltyStrategy, RiemannianStrategy, CayleyStrategy, ProcrustesStrategy)
}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy under ``cls.name`` (usable as a class decorator); its options must not clash with others'."""
    for option in cls.options:
        other = declared_options().get(option.name)
        if other is not None and other != option:
            raise UsageError(f"strategy {cls.name!r} declares option {option.name!r} unlike another strategy does")
    STRATEGIES[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    STRATEGIES.pop(name, None)


def declared_options() -> dict[str, Option]:
    """Every option some registered strategy reads, by name (strategies may share one, such as ``rotation_rank``)."""
    return {o.name: o for cls in STRATEGIES.values() for o in cls.options}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
