"""The study's settings that are chosen once on validation before its seeds run, beside the real vector's rates.

Two selections, each per rung, on one seed's validation sets (the suite's, which the
source vectors never saw; :func:`orthoxfer.experiments.bench.choose_row` reads no test
data), at each rung's rates from ``--config`` (``[bench.rates]`` and ``[study.rates.<rung>]``,
as ``benchmarks/choose_rates.py`` wrote them):

- ``anchors``: the anchored rows' beta. Each trained strategy's anchored row from the
  identity is fitted at each beta of the grid (0 included: the step chosen on validation
  alone) and the beta with the best mean over the strategies wins on that rung (ties: the
  smaller); where the largest wins the grid grows x10, twice at most. Keeping U near its
  start pays only where the start carries the vector, so each rung gets its own
  (``[study.anchors]``, written by ``--config-out``), as a user with that pair would choose.
- ``control-rates``: each control row's learning rate. A rate chosen for the real vector
  suits the real vector; a control run at it would measure how ill the rate fits the
  control beside what the vector carries. Each trained strategy's row on each of the rung's
  controls (the study's: ``spectrum`` everywhere, the paper's three on ``data``) tries the
  ``--lrs`` grid (growing past a winning edge) and is stored as a bench row, so
  ``choose_rates.py`` reads it beside the real vector's (its rate lands as
  ``"<method>/<control>"``).

Resumable: entries or rows already in ``--out`` are kept; the rows' checkpoints live under
``--work``. Two processes may take different ``--rungs`` into different ``--out`` files
(``anchors``) or the same folder (``control-rates``); ``--merge`` joins anchor files.

    python benchmarks/select_settings.py anchors --config rates.toml --rungs same,release \\
        --out benchmarks/results/study-v2/select-anchors-same-release.json
    python benchmarks/select_settings.py control-rates --config rates.toml --rungs seed,data \\
        --out benchmarks/results/study-v2/select-control
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from orthoxfer.artifacts import write_json, write_text
from orthoxfer.experiments.bench import Row, choose_row, run_row
from orthoxfer.experiments.bench_settings import BenchSettings, resolve_bench
from orthoxfer.experiments.step_cost import machine
from orthoxfer.experiments.study import (
    PAPER_RUNG,
    STUDY_TASKS,
    StudyPlan,
    rung_anchors,
    rung_inputs,
    rung_rates,
)
from orthoxfer.runs import Run
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.transfers.registry import method_fits_similarity
from orthoxfer.vectors.controls import valid_controls
from orthoxfer.version import source_digest

PAPER_CONTROLS = ("norm", "spectrum", "other-task")  # the study's defaults: --controls and --paper-controls
GROWTH = 2  # a beta grid whose largest wins grows x10, at most this many times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("anchors", "control-rates"))
    parser.add_argument("--config", type=Path, help="The study's settings (its rates above all).")
    parser.add_argument("--rungs", default="same,release,seed,data")
    parser.add_argument("--betas", default="0,0.01,0.1,1", help="anchors: the grid")
    parser.add_argument("--lrs", default="3e-3,1e-2,3e-2", help="control-rates: the grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="full", help="full | micro (seconds; a smoke test of this script)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", default="runs/select-settings", help="Run folder for the rows' checkpoints.")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="anchors: other rungs' files to add.")
    parser.add_argument("--config-out", type=Path, help="anchors: also write the choice as [study.anchors].")
    args = parser.parse_args()
    settings = resolve_bench(
        "mini",
        args.size,
        torch.device("cpu"),
        args.config,
        choices={"kinds": ("embed",), "anchored": ("identity",), "controls": ("spectrum",)},
        tasks=len(STUDY_TASKS),
    )
    if settings.bench.mode != "per-task":
        raise SystemExit("the study's rows are chosen per task: the config must leave [align] mode per-task")
    plan = StudyPlan(
        tuple(args.rungs.split(",")),
        1,
        STUDY_TASKS,
        args.size,
        {"mini": settings},
        rung_controls={PAPER_RUNG: PAPER_CONTROLS},
        rung_rates=rung_rates(args.config),
        rung_anchors=rung_anchors(args.config),
        first_seed=args.seed,
    )
    (select_anchors if args.what == "anchors" else select_control_rates)(args, plan, settings)


def strategies() -> list[str]:
    """The trained strategies that fit a similarity transform: those that take an anchor and whose rate moves U."""
    return [m for m in STRATEGIES if method_fits_similarity(m)]


def select_control_rates(args, plan: StudyPlan, settings: BenchSettings) -> None:
    """Every trained strategy's row on each of the rung's controls, at each rate of the grid, stored as bench rows."""
    grid = tuple(float(x) for x in args.lrs.split(","))
    for rung in plan.rungs:
        config = dataclasses.replace(plan.bench(rung), lrs=grid)
        rows = [
            Row("embed", method, "identity", control)
            for method in strategies()
            for control in valid_controls(config.controls, True)
        ]
        folder = args.out / rung / "rows"
        todo = [row for row in rows if not (folder / f"{row.id}-seed{args.seed}.json").exists()]
        if not todo:
            continue
        inputs = rung_inputs(plan, rung, args.seed)
        for row in todo:
            torch.manual_seed(args.seed)
            record = run_row(row, inputs, config, Run(f"{args.work}/{args.size}/{rung}", resume=True), args.seed)
            write_json(folder / f"{row.id}-seed{args.seed}.json", record)
            best = record["lr_validation"][f"{record['lr']:g}"]
            print(f"{rung}/{row.label}: lr {record['lr']:g} ({100 * best:.1f})", flush=True)


def select_anchors(args, plan: StudyPlan, settings: BenchSettings) -> None:
    """Each rung's beta: every strategy's anchored row at each beta, the grid growing past a winning largest."""
    started = time.perf_counter()
    made = {
        "settings": settings.record(),
        "rates": {rung: plan.bench(rung).rates for rung in plan.rungs},
        "size": args.size,
        "seed": args.seed,
        "code": source_digest(),
    }
    done: dict[str, dict] = {}
    finished: list[str] = []  # rungs whose grid is complete, grown where it had to
    if args.out.exists():  # resume only what the same settings made
        previous = json.loads(args.out.read_text())
        if {k: previous.get(k) for k in made} != made:
            raise SystemExit(f"{args.out} holds a selection made with other settings or code: give another --out")
        done, finished = previous["validation"], previous.get("finished", [])
    for path in args.merge:  # another process's rungs, made with the same settings at the same rungs' rates
        part = json.loads(path.read_text())
        same = all(part[k] == made[k] for k in ("settings", "size", "seed", "code"))
        if not same or any(part["rates"][r] != made["rates"].get(r, part["rates"][r]) for r in part["rates"]):
            raise SystemExit(f"{path} was made with other settings, rates, code, size or seed: it cannot be merged")
        done.update(part["validation"])
        made["rates"] = {**part["rates"], **made["rates"]}
        finished += part.get("finished", [])
    rungs = list(dict.fromkeys([*plan.rungs, *(k.split("/")[0] for k in done)]))
    finished = [rung for rung in dict.fromkeys(finished) if rung not in plan.rungs]  # plan.rungs are checked anew
    grid = [float(b) for b in args.betas.split(",")]
    for rung in plan.rungs:
        betas, inputs = list(grid), None
        while True:
            for beta in betas:
                config = plan.bench(rung)
                config = dataclasses.replace(config, anchor={**config.anchor, "anchor": beta})
                for method in strategies():
                    key = f"{rung}/{beta:g}/{method}"
                    if key in done:
                        continue
                    inputs = inputs or rung_inputs(plan, rung, args.seed)
                    torch.manual_seed(args.seed)
                    work = Run(f"{args.work}/{args.size}/{rung}/beta{beta:g}", resume=True)
                    _, record = choose_row(
                        Row("embed", method, "identity", anchored=True), inputs, config, work, args.seed
                    )
                    scores = record["validation_score"]
                    done[key] = {"mean": sum(scores.values()) / len(scores), **scores, "step": record["chosen_step"]}
                    print(key, round(100 * done[key]["mean"], 1), flush=True)
                    _write_anchors(args.out, {**made, "finished": finished}, rungs, done, started)
            means, top = _means(done, rung), max(betas)
            if max(means, key=lambda b: (means[b], -b)) != top or len(betas) - len(grid) >= GROWTH or top == 0:
                break
            betas.append(10 * top)
        finished.append(rung)
    chosen = _write_anchors(args.out, {**made, "finished": finished}, rungs, done, started)
    if args.config_out is not None:
        lines = [
            "# Each rung's anchored beta, chosen on validation by benchmarks/select_settings.py",
            "[study.anchors]",
        ]
        lines += [
            f"{rung} = {beta:g}  # validation {100 * _means(done, rung)[beta]:.1f}" for rung, beta in chosen.items()
        ]
        write_text(args.config_out, "\n".join(lines) + "\n")


def _means(done: dict[str, dict], rung: str) -> dict[float, float]:
    """A rung's mean validation over the strategies, by beta, for the betas every strategy has."""
    by_beta: dict[float, list[float]] = {}
    for key, entry in done.items():
        r, beta, _ = key.split("/")
        if r == rung:
            by_beta.setdefault(float(beta), []).append(entry["mean"])
    return {b: sum(v) / len(v) for b, v in by_beta.items() if len(v) == len(strategies())}


def _write_anchors(out: Path, made: dict, rungs: list[str], done: dict[str, dict], started: float) -> dict[str, float]:
    """The results so far (an interrupted run keeps them) and each rung's beta where its grid is complete."""
    chosen = {}
    for rung in made.get("finished", []):  # a rung whose grid is complete, grown where it had to
        means = _means(done, rung)
        chosen[rung] = max(means, key=lambda b: (means[b], -b))  # ties: the smaller beta
    write_json(
        out,
        {
            "validation": done,
            "mean_by_beta": {rung: {f"{b:g}": m for b, m in _means(done, rung).items()} for rung in rungs},
            "chosen": chosen,
            **made,
            "seconds": time.perf_counter() - started,
            "machine": machine(torch.device("cpu")),
        },
    )
    return chosen


if __name__ == "__main__":
    main()
