"""Suites: named tasks with few-shot pools, heads and test sets, built for a source and a target model.

One registry, one signature: every builder takes a
:class:`~orthoxfer.suites.base.SuiteRequest` and returns
:class:`~orthoxfer.suites.base.SuiteInputs`. ``paper``: the eight datasets under a data
root; ``mini``: the offline miniature; ``planted``: its positive control.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orthoxfer.errors import UsageError
from orthoxfer.suites import mini, paper, planted
from orthoxfer.suites.base import SuiteInputs, SuiteRequest

SUITES: dict[str, Callable[[SuiteRequest], SuiteInputs]] = {"mini": mini.build, "planted": planted.build, "paper": paper.build}


DEFAULTS: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {"mini": mini.defaults, "planted": mini.defaults, "paper": paper.defaults}


def default_tables(name: str) -> dict[str, dict[str, Any]]:
    """The ``[finetune]``, ``[align]`` and ``[fewshot_ft]`` settings a suite runs with unless a config or flag says otherwise."""
    if name not in DEFAULTS:
        raise UsageError(f"unknown suite {name!r}; choose mini, planted or paper")
    return DEFAULTS[name]()


def build_suite(name: str, request: SuiteRequest) -> SuiteInputs:
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r}; choose mini, planted or paper")
    return SUITES[name](request)
