"""Flags generated from the strategies' declared options, so a strategy's new setting needs no CLI edit.

``align`` and ``bench`` are written with the settings every strategy shares; at the
time the app is built, :func:`with_strategy_options` adds one flag per option any
registered strategy declares (``--alpha``, ``--retraction``, ``--rotation-rank`` ...)
and hands their values to the command as one ``strategy_options`` dict (flags not
given are left out, so a config file or the default decides). ``bench`` also gets one
flag per option a registered transfer method declares (``--gradfix-shots`` ...), in the
same dict.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from orthoxfer.strategies.registry import declared_options
from orthoxfer.transfers.registry import declared_options as transfer_options


def with_strategy_options(
    command: Callable[..., Any], transfers: bool = False, strategies: bool = True
) -> Callable[..., Any]:
    """``command`` (which takes ``strategy_options``) with a flag for every declared strategy and/or transfer option."""
    declared = {**(declared_options() if strategies else {}), **(transfer_options() if transfers else {})}
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # typer reads a given signature as it is: no strings
    shared = [
        p.replace(annotation=hints[p.name]) for p in signature.parameters.values() if p.name != "strategy_options"
    ]
    added = {}
    for option in declared.values():
        help_text = option.help + (f" [default: {option.default}]" if option.default != "" else "")
        added[option.name] = Annotated[option.type | None, typer.Option(option.flag, help=help_text)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, None) for name in added}
        return command(**kwargs, strategy_options={k: v for k, v in values.items() if v is not None})

    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a) for n, a in added.items()]
    positional = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in shared]
    wrapper.__signature__ = signature.replace(parameters=positional + extra)  # type: ignore[attr-defined]  # typeshed's functions have no __signature__; inspect reads it
    wrapper.__annotations__ = {**{p.name: p.annotation for p in shared}, "return": hints.get("return"), **added}
    return wrapper
