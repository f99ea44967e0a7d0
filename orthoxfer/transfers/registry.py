"""The transfer registry: name -> class; :func:`register` adds one from anywhere.

A variant of a method as its reference runs it (``transfusion-reference``,
``gradfix-pool``) is a subclass with a name and options of its own, registered like any
method: it then gets its own bench and study rows, controls and seeds, and its rows
record the settings it read.

Method names share one namespace with the alignment strategies (a bench row is named
by its method), so a transfer may not take a strategy's name.
"""

from __future__ import annotations

from typing import Any

from orthoxfer.errors import UsageError
from orthoxfer.strategies.options import Option
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.transfers.base import NEEDS, Transfer, TransferSettings
from orthoxfer.transfers.bico import BiCo
from orthoxfer.transfers.direct_residual import DirectResidual
from orthoxfer.transfers.gradfix import GradFix, GradFixPool
from orthoxfer.transfers.orthogonal_shift import OrthogonalShift
from orthoxfer.transfers.theseus import Theseus
from orthoxfer.transfers.transfusion import TransFusion, TransFusionReference

TRANSFERS: dict[str, type[Transfer]] = {
    cls.name: cls
    for cls in (
        GradFix,
        GradFixPool,
        OrthogonalShift,
        TransFusion,
        TransFusionReference,
        Theseus,
        BiCo,
        DirectResidual,
    )
}


def register(cls: type[Transfer]) -> type[Transfer]:
    """Add a transfer method under ``cls.name`` (usable as a class decorator)."""
    if cls.name in STRATEGIES:
        raise UsageError(f"transfer {cls.name!r} takes the name of an alignment strategy")
    if cls.needs not in NEEDS:
        raise UsageError(f"transfer {cls.name!r} needs {cls.needs!r}; declare one of {', '.join(NEEDS)}")
    for option in cls.options:
        other = declared_options().get(option.name)
        if other is not None and other != option:
            raise UsageError(f"transfer {cls.name!r} declares option {option.name!r} unlike another transfer does")
    TRANSFERS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    TRANSFERS.pop(name, None)


def declared_options() -> dict[str, Option]:
    """Every option some registered transfer reads, by name."""
    return {o.name: o for cls in TRANSFERS.values() for o in cls.options}


def method_needs(name: str) -> str:
    """What data a method of either kind (a transfer or an alignment strategy) declares it needs."""
    check_method(name)
    return (TRANSFERS.get(name) or STRATEGIES[name]).needs


def method_fits_similarity(name: str) -> bool:
    """Whether a method fits ``U^T dW U`` to the vector (a trained aligner); transfers never do: they find their map
    from the models, the images or the target's gradients, and cannot rotate a control back into the vector."""
    check_method(name)
    return name in STRATEGIES and STRATEGIES[name].fits_similarity


def check_method(name: str) -> None:
    """Refuse a name that is neither a strategy nor a transfer method, in one line naming both lists."""
    if name not in STRATEGIES and name not in TRANSFERS:
        raise UsageError(
            f"unknown method {name!r}; strategies: {', '.join(STRATEGIES)}; transfers: {', '.join(TRANSFERS)}"
        )


def transfer_settings(values: dict[str, Any], seed: int = 0, device: str = "cpu") -> TransferSettings:
    """Checked settings: every declared option (``values`` or its default); an undeclared name is refused."""
    declared = declared_options()
    unknown = set(values) - set(declared)
    if unknown:
        raise UsageError(f"unknown transfer setting {sorted(unknown)[0]!r}; known: {', '.join(sorted(declared))}")
    return TransferSettings(seed, device, {n: o.check(values.get(n, o.default)) for n, o in declared.items()})
