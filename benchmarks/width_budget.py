"""What the width ladder costs before it runs: a pre-training step and an alignment step at each width.

Measured in one process on a quiet machine (nothing else running), side by side, so the
ratios between widths hold even where the absolute seconds do not carry to another machine:

- pre-training: :func:`orthoxfer.models.pretrain.pretrain` of model A at the width, the
  recipe's batch and schedule, on a corpus just big enough; seconds per step are the
  difference between a long and a short run over their difference in steps, so start-up
  cost cancels;
- alignment: the real steps ``orthoxfer bench-speed`` times (few-shot fine-tuning's floor,
  penalty, cayley, riemannian) on the mini architecture at the width with random weights,
  32 images per step; the median over ``--steps`` rounds, rows interleaved within a round.

The projection multiplies: pre-training hours for the three models a width needs for the
``data`` and ``release`` rungs (A, B and release, each ``PretrainConfig.steps`` steps),
and a study seed on those two rungs as width 128's measured seed time (``--seed-seconds``,
from a study's rows) scaled by the penalty step's ratio to width 128.

    python benchmarks/width_budget.py --widths 64,128,192,256 --out benchmarks/results/widths/budget.json
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import torch

from orthoxfer.artifacts import write_json
from orthoxfer.data.mini_corpora import corpus
from orthoxfer.experiments.step_cost import build_rows, machine, timed
from orthoxfer.models.pretrain import PretrainConfig, pretrain

ROWS = ["floor", "penalty", "cayley", "riemannian-qr"]
MODELS = ("a", "b", "release")  # what the data and release rungs need at a width


def pretrain_step_seconds(width: int, short: int, long: int) -> float:
    """Seconds per pre-training step at ``width``: (long run - short run) / (long - short)."""
    config = PretrainConfig(width=width)
    data = corpus("a", config.batch_size * long, config.seed_a)
    seconds = []
    for steps in (short, long):
        run = dataclasses.replace(config, steps=steps, warmup=1)
        seconds.append(pretrain(run, "a", data=data, progress=False)[1]["seconds"])
    return (seconds[1] - seconds[0]) / (long - short)


def align_step_seconds(width: int, rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per step of each alignment row at ``width`` (random weights: the cost does not depend on them)."""
    rows, _ = build_rows(f"mini-w{width}", 32, torch.device("cpu"), ROWS, ["dense"], 16)
    for _ in range(warmup):
        for row in rows:
            row.run()
    for r in range(rounds):
        for row in rows[r % len(rows) :] + rows[: r % len(rows)]:
            row.times.append(timed(row, torch.device("cpu")))
    return {row.name: statistics.median(row.times) for row in rows}


def budget(widths: list[int], short: int, long: int, rounds: int, seed_seconds: float | None) -> dict:
    per_width: dict[str, dict] = {}
    for width in widths:
        step = pretrain_step_seconds(width, short, long)
        align = align_step_seconds(width, rounds, warmup=2)
        per_width[str(width)] = {
            "pretrain_step_s": round(step, 4),
            "align_step_s": {k: round(v, 4) for k, v in align.items()},
            "pretrain_hours": round(step * PretrainConfig(width=width).steps * len(MODELS) / 3600, 2),
        }
    base = per_width.get("128")
    for record in per_width.values():
        if base is not None:
            record["align_ratio_to_128"] = round(record["align_step_s"]["penalty"] / base["align_step_s"]["penalty"], 2)
            record["pretrain_ratio_to_128"] = round(record["pretrain_step_s"] / base["pretrain_step_s"], 2)
            if seed_seconds is not None:
                record["study_seed_hours"] = round(seed_seconds * record["align_ratio_to_128"] / 3600, 2)
    return {
        "widths": per_width,
        "settings": {
            "short": short,
            "long": long,
            "rounds": rounds,
            "models": list(MODELS),
            "seed_seconds": seed_seconds,
        },
        "machine": machine(torch.device("cpu")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,128,192,256")
    parser.add_argument("--short", type=int, default=5, help="pre-training steps of the short run")
    parser.add_argument("--long", type=int, default=25, help="pre-training steps of the long run")
    parser.add_argument("--rounds", type=int, default=10, help="timed alignment rounds")
    parser.add_argument(
        "--seed-seconds", type=float, help="width 128's seconds for one study seed on data and release (its rows')"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/widths/budget.json"))
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    report = budget(widths, args.short, args.long, args.rounds, args.seed_seconds)
    write_json(args.out, report)
    for width, record in report["widths"].items():
        print(width, record)


if __name__ == "__main__":
    main()
