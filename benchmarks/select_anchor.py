"""The anchored rows' beta, chosen once on validation before the study runs its seeds.

An anchored row adds beta * sum ||U - U0||^2 to a trained strategy's loss and keeps the
step that scores best on validation. beta is a setting, so it is chosen as every setting
is: on validation data (the suite's validation sets, which the source vectors never saw),
never on test. Per rung of the study (seed 0, the study's tasks and settings, each rung's
rates from ``--config``: ``[bench.rates]`` and ``[study.rates.<rung>]``), each trained strategy's anchored row from the identity is fitted at each
beta of the grid and scored on validation (:func:`orthoxfer.experiments.bench.choose_row`
reads no test data); the beta with the best mean over rungs and strategies wins (ties:
the smaller). The choice goes into the study's config as ``[bench] anchor``. Resumable:
entries already in ``--out`` are kept (and ``--merge`` adds those another process made for
other rungs); the rows' checkpoints live under ``--work``.

    python benchmarks/select_anchor.py --config configs/study-v2.toml \\
        --out benchmarks/results/study-v2/select-anchor.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from orthoxfer.artifacts import write_json
from orthoxfer.experiments.bench import Row, choose_row
from orthoxfer.experiments.bench_settings import resolve_bench
from orthoxfer.experiments.step_cost import machine
from orthoxfer.experiments.study import MODEL_SEED, STUDY_TASKS, rung_rates, rung_suite
from orthoxfer.runs import Run
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.suites import build_suite
from orthoxfer.suites.base import SuiteRequest
from orthoxfer.transfers.registry import method_fits_similarity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="The study's settings (its rates above all).")
    parser.add_argument("--betas", default="0.1,1,10")
    parser.add_argument("--rungs", default="same,release,seed,data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="full", help="full | micro (seconds; a smoke test of this script)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/study-v2/select-anchor.json"))
    parser.add_argument("--work", default="runs/select-anchor", help="Run folder for the rows' checkpoints.")
    parser.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="Selections of some rungs (made alike) to add."
    )
    args = parser.parse_args()
    device = torch.device("cpu")
    betas = [float(b) for b in args.betas.split(",")]
    methods = tuple(m for m in STRATEGIES if method_fits_similarity(m))  # the trained strategies that take an anchor
    started = time.perf_counter()
    settings = resolve_bench(
        "mini",
        args.size,
        device,
        args.config,
        choices={"kinds": ("embed",), "anchored": ("identity",)},
        tasks=len(STUDY_TASKS),
    )
    if settings.bench.mode != "per-task":
        raise SystemExit("the anchored rows are chosen per task: the config must leave [align] mode per-task")
    rungs = args.rungs.split(",")
    rates = {rung: {**settings.bench.rates, **rung_rates(args.config).get(rung, {})} for rung in rungs}
    made = {"settings": settings.record(), "rates": rates, "size": args.size, "seed": args.seed}
    done = {}
    if args.out.exists():  # resume only what the same settings made
        previous = json.loads(args.out.read_text())
        if {k: previous.get(k) for k in made} != made:
            raise SystemExit(f"{args.out} holds a selection made with other settings, size or seed: give another --out")
        done = previous["validation"]
    for path in args.merge:  # another process's rungs, made with the same settings at the same rungs' rates
        part = json.loads(path.read_text())
        same = all(part[k] == made[k] for k in ("settings", "size", "seed"))
        if not same or any(part["rates"][r] != rates.get(r) for r in part["rates"]):
            raise SystemExit(f"{path} was made with other settings, rates, size or seed: it cannot be merged")
        done.update(part["validation"])
    for rung in rungs:
        suite, pair = rung_suite(rung)
        request = SuiteRequest(
            seed=args.seed,
            model_seed=MODEL_SEED,
            shots=settings.shots,
            size=args.size,
            pair=pair,
            tasks=STUDY_TASKS,
            kinds=("embed",),
            source_ft=settings.source_ft,
        )
        inputs = build_suite(suite, request)
        for beta in betas:
            anchor = {**settings.bench.anchor, "anchor": beta}
            config = dataclasses.replace(settings.bench, anchor=anchor, rates=rates[rung])  # the study's rung's rates
            for method in methods:
                key = f"{rung}/{beta:g}/{method}"
                if key in done:
                    continue
                torch.manual_seed(args.seed)
                row = Row("embed", method, "identity", anchored=True)
                _, record = choose_row(
                    row, inputs, config, Run(f"{args.work}/{args.size}/{rung}/beta{beta:g}", resume=True), args.seed
                )
                scores = record["validation_score"]
                done[key] = {"mean": sum(scores.values()) / len(scores), **scores, "step": record["chosen_step"]}
                print(key, round(100 * done[key]["mean"], 1), flush=True)
                _write(args, made, betas, len(methods), done, started, device)
    _write(args, made, betas, len(methods), done, started, device)


def _write(args, made, betas, methods: int, done, started, device) -> None:
    """The results so far (an interrupted run keeps them) and, once every entry is in, the chosen beta."""
    means, complete, rungs = {}, True, args.rungs.split(",")
    for beta in betas:
        entries = [v["mean"] for k, v in done.items() if k.split("/")[0] in rungs and k.split("/")[1] == f"{beta:g}"]
        means[f"{beta:g}"] = sum(entries) / len(entries) if entries else None
        complete = complete and len(entries) == methods * len(rungs)
    chosen = max(betas, key=lambda b: (means[f"{b:g}"], -b)) if complete else None  # ties: the smaller beta
    write_json(
        args.out,
        {
            "validation": done,
            "mean_by_beta": means,
            "chosen": chosen,
            "rungs": rungs,
            **made,
            "seconds": time.perf_counter() - started,
            "machine": machine(device),
        },
    )


if __name__ == "__main__":
    main()
