"""Is the mini suite in the paper's regime? The four checks of issue 16, measured with the suite's defaults.

Rows (seed 0, embed vectors, per-task mode, every setting the suite's default): on the
``data`` rung (A -> B) target only, few-shot FT and direct addition; on the ``same``
rung target only and direct addition, whose difference is what each source vector
adds to its own task on the source, and whose direct addition is the ceiling (the
source's own fine-tuned accuracy: what a perfect transfer reaches). The checks:

1. few-shot FT at least 10 points above target only (mean);
2. direct addition within 1.5 points of target only (mean);
3. each source vector raises its task on the source by at least 10 points on at least 6 of 8 tasks;
4. the ceiling at least 10 points above few-shot FT (mean).

It also ranks the tasks by headroom (ceiling - few-shot FT) on validation only, on a
pool draw no study seed uses (:func:`orthoxfer.experiments.headroom.rank_tasks`): the
demo and the study run the four with most. The checks are then read on test, on that
same draw. Writes ``--out`` (JSON, with the machine named).

    python benchmarks/mini_regime.py --out benchmarks/results/mini-regime.json
"""

from __future__ import annotations

import argparse
import time

import torch

from orthoxfer.artifacts import write_json
from orthoxfer.experiments.bench import BenchConfig, Row, run_row
from orthoxfer.experiments.bench_settings import resolve_bench
from orthoxfer.experiments.headroom import RANKING_SEED, rank_tasks
from orthoxfer.experiments.step_cost import machine
from orthoxfer.runs import Run
from orthoxfer.suites import build_suite
from orthoxfer.suites.base import SuiteRequest

ROWS = {
    "data": (Row("", "target"), Row("", "finetune"), Row("embed", "direct")),
    "same": (Row("", "target"), Row("embed", "direct")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/mini-regime.json")
    parser.add_argument("--work", default="runs/mini-regime", help="Run folder for the rows' checkpoints (resumable).")
    args = parser.parse_args()
    device = torch.device("cpu")
    settings = resolve_bench("mini", "full", device, choices={"kinds": ("embed",)})
    config: BenchConfig = settings.bench
    acc: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    inputs = {}
    for pair in ROWS:
        request = SuiteRequest(
            seed=RANKING_SEED,
            model_seed=0,
            shots=settings.shots,
            pair=pair,
            kinds=("embed",),
            source_ft=settings.source_ft,
        )
        inputs[pair] = build_suite("mini", request)
    ranking = rank_tasks(inputs["same"], inputs["data"], config, Run(args.work, resume=True))  # validation only
    print("headroom on validation:", {t: round(100 * v, 1) for t, v in ranking["headroom"].items()}, flush=True)
    for pair, rows in ROWS.items():  # then the regime's checks, on test
        for row in rows:
            torch.manual_seed(RANKING_SEED)
            record = run_row(row, inputs[pair], config, Run(f"{args.work}/{pair}", resume=True), seed=RANKING_SEED)
            acc[f"{pair}/{row.method}"] = {k: 100 * v for k, v in record["accuracy"].items()}
            if row.method == "direct":
                acc[f"{pair}/direct_scale1"] = {k: 100 * v for k, v in record["accuracy_scale1"].items()}
            print(pair, row.label, {k: round(v, 1) for k, v in acc[f"{pair}/{row.method}"].items()}, flush=True)
    tasks = [k for k in acc["data/target"] if k != "mean"]
    ceiling, ft, target = acc["same/direct_scale1"], acc["data/finetune"], acc["data/target"]
    gains = {t: ceiling[t] - acc["same/target"][t] for t in tasks}
    headroom = {t: ceiling[t] - ft[t] for t in tasks}
    checks = {
        "fewshot_ft_over_target": (ft["mean"] - target["mean"], ">= 10"),
        "direct_minus_target": (acc["data/direct"]["mean"] - target["mean"], "within 1.5"),
        "tasks_whose_vector_adds_10_on_the_source": (sum(g >= 10 for g in gains.values()), ">= 6 of 8"),
        "ceiling_over_fewshot_ft": (ceiling["mean"] - ft["mean"], ">= 10"),
    }
    for name, (value, wanted) in checks.items():
        print(f"{name}: {value:.1f} (wanted {wanted})")
    write_json(
        args.out,
        {
            "accuracy": acc,
            "source_gain": gains,
            "headroom_test": headroom,
            "headroom_validation": ranking["headroom"],
            "headroom_order": ranking["order"],
            "ranking": ranking,
            "checks": {k: {"value": v, "wanted": w} for k, (v, w) in checks.items()},
            "settings": settings.record(),
            "shots": settings.shots,
            "seconds": time.perf_counter() - started,
            "machine": machine(device),
        },
    )


if __name__ == "__main__":
    main()
