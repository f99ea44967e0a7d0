"""Suites: named tasks with few-shot pools, heads and test sets, built for a source and a target model.

One registry, one signature: every builder takes a
:class:`~orthoxfer.suites.base.SuiteRequest` and returns
:class:`~orthoxfer.suites.base.SuiteInputs`. ``paper``: the eight datasets under a data
root; ``mini``: the offline miniature; ``planted``: its positive control. ``paper`` and
``mini`` also open from a request as a :class:`~orthoxfer.suites.base.Suite` for the
single-run commands (:func:`open_suite`).
"""

from __future__ import annotations

from typing import Any

from orthoxfer.errors import UsageError
from orthoxfer.suites import mini, paper, planted
from orthoxfer.suites.base import Suite, SuiteEntry, SuiteInputs, SuiteRequest

SUITES: dict[str, SuiteEntry] = {
    "mini": SuiteEntry(mini.build, mini.defaults, mini.MiniSuite.open, mini.models_record),
    "planted": SuiteEntry(planted.build, mini.defaults, models=mini.models_record),
    "paper": SuiteEntry(paper.build, paper.defaults, paper.PaperSuite.open),
}


def _entry(name: str) -> SuiteEntry:
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r}; choose {', '.join(SUITES)}")
    return SUITES[name]


def default_tables(name: str, size: str = "full", tasks: int | None = None) -> dict[str, dict[str, Any]]:
    """The ``[finetune]``, ``[align]`` and ``[fewshot_ft]`` settings a suite runs with on ``tasks`` tasks (None: all of
    them) unless a config or flag says otherwise."""
    return _entry(name).defaults(size, tasks)


def models_record(name: str, size: str = "full", width: int | None = None) -> dict[str, Any]:
    """What a run's config.json records of the models suite ``name`` builds itself (nothing for the paper's)."""
    return _entry(name).models(size, width)


def _check_augmentation(name: str, request: SuiteRequest) -> None:
    """Only the paper's pools take a named augmentation (the miniature's are its own: shifts at 32 px), and only its
    target can be built with the released code's activation bug."""
    if name != "paper" and request.augmentation != "suite":
        raise UsageError(f"augmentation {request.augmentation!r} is for --suite paper; the {name} suite has its own")
    if name != "paper" and request.reference_gelu:
        raise UsageError(f"--reference-gelu is for --suite paper; the {name} suite's models are built here")


def build_suite(name: str, request: SuiteRequest) -> SuiteInputs:
    _check_augmentation(name, request)
    return _entry(name).build(request)


def open_suite(name: str, request: SuiteRequest) -> Suite:
    """The suite a single-run command names with ``--suite``, checked against the options that belong to another suite."""
    choices = " or ".join(n for n, entry in SUITES.items() if entry.open is not None)
    entry = SUITES.get(name)
    if entry is None:
        raise UsageError(f"unknown suite {name!r}; choose {choices}")
    if entry.open is None:
        raise UsageError(f"the {name} suite runs only in `orthoxfer bench`; choose {choices} here")
    _check_augmentation(name, request)
    return entry.open(request)
