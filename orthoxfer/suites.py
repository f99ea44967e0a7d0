"""Suites: named tasks with their few-shot pools and heads, built for a given model.

``paper`` reads the eight datasets from a data root and uses each model's own
zero-shot text heads. The offline ``mini`` suite lives in :mod:`orthoxfer.data.mini`.
"""

from __future__ import annotations

from pathlib import Path

from orthoxfer.data.fewshot import fewshot_task
from orthoxfer.data.paper import dataset
from orthoxfer.models.heads import default_cache_dir, zero_shot_head
from orthoxfer.models.loading import LoadedModel
from orthoxfer.problem import FewShotTask


def paper_fewshot_tasks(
    model: LoadedModel,
    names: list[str],
    data_root: Path | str,
    shots: int | None,
    shots_per_class: int | None,
    seed: int,
    heads_dir: Path | str | None = None,
) -> dict[str, FewShotTask]:
    """Few-shot pools (train split only) with ``model``'s own zero-shot heads, keyed by dataset name."""
    tasks = {}
    for name in names:
        spec = dataset(name)
        head = zero_shot_head(model, None, spec.classnames, spec.templates, cache_dir=heads_dir or default_cache_dir(), name=spec.name)
        tasks[spec.name] = fewshot_task(spec.name, data_root, model, head, shots=shots, shots_per_class=shots_per_class, seed=seed)
    return tasks
