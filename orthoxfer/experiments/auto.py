"""``auto``: per task, the row whose model scored best on validation, chosen among rows already computed.

Selection among computed rows costs nothing and reads no test data: each row's record
holds its per-task validation score (``validation_score``), and the chosen row's test
accuracy is copied, not measured again. Every candidate's validation score and the
choice are recorded, so the choice can be audited. Controls are never candidates: they
carry no task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orthoxfer.errors import UsageError

AUTO = "auto"


def is_candidate(record: dict[str, Any]) -> bool:
    """A row auto may choose: the real vector (no control), scored per task on validation, not auto itself."""
    return not record.get("control") and record.get("method") != AUTO and "validation_score" in record


def choose(records: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    """Per task the candidate with the best validation score (ties: the first row of the table) and its test accuracy."""
    candidates = [r for r in records if is_candidate(r)]
    if not candidates:
        raise UsageError(
            "auto chooses on validation scores and no row has any: hold validation data out (--val-fraction)"
        )
    best = best_per_task({r["row"]: r["validation_score"] for r in candidates}, tasks)
    chosen = {t: next(r for r in candidates if r["row"] == best[t]) for t in tasks}
    accuracy = {t: chosen[t]["accuracy"][t] for t in tasks}
    return {
        "chosen": {t: chosen[t]["row"] for t in tasks},
        "candidates": {r["row"]: r["validation_score"] for r in candidates},
        "validation_score": {t: chosen[t]["validation_score"][t] for t in tasks},
        "accuracy": {**accuracy, "mean": sum(accuracy.values()) / len(tasks)},
    }


def best_per_task(scores: Mapping[str, Mapping[str, float]], tasks: Sequence[str]) -> dict[str, str]:
    """Per task the candidate (``scores``: candidate -> task -> validation score, in the order ties go) that scored
    best; ties go to the earlier candidate, the cheaper one where candidates are listed cheapest first."""
    return {t: max(scores, key=lambda name: scores[name][t]) for t in tasks}
