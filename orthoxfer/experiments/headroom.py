"""Which tasks a study runs: those with most room between few-shot FT and the ceiling, ranked on validation only.

Ranking on test, on a draw the study then tests, is a winner's curse: the tasks where
few-shot FT happened to score low on that draw are kept, and "aligners beat few-shot FT"
is favoured. So the ranking reads validation scores only (the ceiling: the source's
vector at lambda = 1 on the ``same`` rung, i.e. the source fine-tuned; few-shot FT per
task on the ``data`` rung at its lambda), on a pool draw (:data:`RANKING_SEED`) that no
study seed uses.
"""

from __future__ import annotations

from typing import Any

from orthoxfer.experiments.bench import BenchConfig, Row, choose_row
from orthoxfer.runs import Run
from orthoxfer.suites.base import SuiteInputs

RANKING_SEED = 1000  # the pools' draw the ranking uses: study seeds are 0..N-1


def rank_tasks(
    same: SuiteInputs, data: SuiteInputs, config: BenchConfig, run: Run, seed: int = RANKING_SEED
) -> dict[str, Any]:
    """Tasks by validation headroom (ceiling - few-shot FT), best first, with the scores it came from."""
    _, direct = choose_row(Row("embed", "direct"), same, config, Run(run.file("same"), resume=True), seed)
    _, ft = choose_row(Row("", "finetune"), data, config, Run(run.file("data"), resume=True), seed)
    ceiling = {t: v["1.0"] for t, v in direct["validation"].items()}
    fewshot = ft["validation_score"]
    headroom = {t: ceiling[t] - fewshot[t] for t in fewshot}
    return {
        "order": sorted(headroom, key=lambda t: headroom[t], reverse=True),
        "headroom": headroom,
        "ceiling_validation": ceiling,
        "fewshot_ft_validation": fewshot,
        "seed": seed,
    }
