"""orthoxfer: carry task vectors between independently pre-trained models with orthogonal similarity transforms.

The public API, importable from the package root::

    from orthoxfer import AlignProblem, AlignSettings, TaskVector, align, diagnose, load_model

Names are resolved on first use (PEP 562): importing ``orthoxfer`` alone, as the command
line does before it knows which command runs, loads neither torch nor open_clip.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orthoxfer.version import __version__

_HOMES = {
    "TaskVector": "orthoxfer.vectors.taskvector",
    "find_sites": "orthoxfer.vectors.sites",
    "control_vectors": "orthoxfer.vectors.controls",
    "load_model": "orthoxfer.models.loading",
    "LoadedModel": "orthoxfer.models.loading",
    "read_adapter": "orthoxfer.vectors.peft_lora",
    "vector_from_checkpoint": "orthoxfer.vectors.checkpoints",
    "write_vision_model": "orthoxfer.models.hf_export",
    "FewShotTask": "orthoxfer.problem.tasks",
    "AlignProblem": "orthoxfer.problem.align_problem",
    "AlignSettings": "orthoxfer.strategies.settings",
    "Option": "orthoxfer.strategies.options",
    "Strategy": "orthoxfer.strategies.base",
    "TrainedStrategy": "orthoxfer.strategies.trained",
    "STRATEGIES": "orthoxfer.strategies.registry",
    "register": "orthoxfer.strategies.registry",
    "align": "orthoxfer.alignment.align",
    "Alignment": "orthoxfer.alignment.artifact",
    "FinetuneSettings": "orthoxfer.fit.finetune",
    "finetune": "orthoxfer.fit.finetune",
    "diagnose": "orthoxfer.evaluation.diagnostics",
    "relate": "orthoxfer.evaluation.relate",
    "target_only": "orthoxfer.evaluation.baselines",
    "direct_addition": "orthoxfer.evaluation.baselines",
    "fewshot_finetune": "orthoxfer.evaluation.baselines",
    "SUITES": "orthoxfer.suites",
    "build_suite": "orthoxfer.suites",
    "SuiteRequest": "orthoxfer.suites.base",
    "paper_fewshot_tasks": "orthoxfer.suites.paper",
    "paper_test_sets": "orthoxfer.suites.paper",
    "paper_test_splits": "orthoxfer.suites.paper",
}
__all__ = ["__version__", *_HOMES]

if TYPE_CHECKING:
    from orthoxfer.alignment.align import align
    from orthoxfer.alignment.artifact import Alignment
    from orthoxfer.evaluation.baselines import direct_addition, fewshot_finetune, target_only
    from orthoxfer.evaluation.diagnostics import diagnose
    from orthoxfer.evaluation.relate import relate
    from orthoxfer.fit.finetune import FinetuneSettings, finetune
    from orthoxfer.models.hf_export import write_vision_model
    from orthoxfer.models.loading import LoadedModel, load_model
    from orthoxfer.problem.align_problem import AlignProblem
    from orthoxfer.problem.tasks import FewShotTask
    from orthoxfer.strategies.base import Strategy
    from orthoxfer.strategies.options import Option
    from orthoxfer.strategies.registry import STRATEGIES, register
    from orthoxfer.strategies.settings import AlignSettings
    from orthoxfer.strategies.trained import TrainedStrategy
    from orthoxfer.suites import SUITES, build_suite
    from orthoxfer.suites.base import SuiteRequest
    from orthoxfer.suites.paper import paper_fewshot_tasks, paper_test_sets, paper_test_splits
    from orthoxfer.vectors.checkpoints import vector_from_checkpoint
    from orthoxfer.vectors.controls import control_vectors
    from orthoxfer.vectors.peft_lora import read_adapter
    from orthoxfer.vectors.sites import find_sites
    from orthoxfer.vectors.taskvector import TaskVector


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'orthoxfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
