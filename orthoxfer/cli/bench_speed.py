"""``orthoxfer bench-speed``: the step-cost table of :mod:`orthoxfer.experiments.step_cost`, printed and written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orthoxfer.cli.common import comma_list, console, reports_errors, resolve_device
from orthoxfer.errors import UsageError
from orthoxfer.terminal import Grid

Opt = typer.Option


def print_table(report: dict[str, Any]) -> None:
    from orthoxfer.experiments.step_cost import number

    table = Grid(
        f"step cost, {report['settings']['arch']}, batch {report['settings']['batch_size']}, {report['machine']['device']}",
        ["method", "vector", "s/step", "x floor", "GFLOP", "state MB", "step peak MB"],
        keys=2,
    )
    for r in report["rows"]:
        table.add_row(
            r["method"],
            r["vector"],
            f"{r['median_s']:.3g}",
            f"{r['ratio_to_floor']:.2f}",
            number(r["gflop"]),
            number(r["state_mb"]),
            number(r["step_peak_mb"]),
        )
    console.print(table)


@reports_errors
def bench_speed_command(
    batch_size: Annotated[
        int | None, Opt("--batch-size", help="Images per step (default: 32 on CPU, 128 on GPU).")
    ] = None,
    steps: Annotated[int, Opt("--steps", help="Timed steps per row (the median is reported).")] = 5,
    warmup: Annotated[int, Opt("--warmup", help="Untimed rounds first (the first also counts FLOPs).")] = 1,
    device: Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    arch: Annotated[
        str,
        Opt(
            "--arch",
            help="open_clip architecture (random weights), 'tiny' for the test model, or 'mini-w<width>' for the mini "
            "suite's at that width (mini alone: 128).",
        ),
    ] = "ViT-B-32",
    out: Annotated[Path, Opt("--out", help="Folder for step_cost-<device>[-compiled].json and .md.")] = Path(
        "benchmarks/results"
    ),
    methods: Annotated[
        str | None,
        Opt(
            "--methods",
            help="Comma-separated rows (an unknown name lists them); the floor is "
            "always timed. Default: every strategy, transfer and activation-side row.",
        ),
    ] = None,
    vector: Annotated[
        str, Opt("--vector", help="Task-vector kinds to time the strategies with: dense, lora or dense,lora.")
    ] = "dense",
    rank: Annotated[int, Opt("--rank", help="LoRA rank for --vector lora.")] = 16,
    rotation_rank: Annotated[
        int, Opt("--rotation-rank", min=0, help="Also time each trained strategy with this --rotation-rank (0: not).")
    ] = 0,
    compile: Annotated[
        bool, Opt("--compile", help="Every row (the floor too) with the target's forward through torch.compile.")
    ] = False,
) -> None:
    """Time one optimiser step of every strategy against plain fine-tuning of the same sites."""
    from orthoxfer.experiments.step_cost import (  # open_clip and the cost models: not for --help
        METHODS,
        result_stem,
        step_cost,
    )

    chosen, kinds = list(comma_list(methods)) if methods is not None else list(METHODS), list(comma_list(vector))
    unknown = [m for m in chosen if m not in METHODS] + [v for v in kinds if v not in ("dense", "lora")]
    if unknown:
        raise UsageError(
            f"unknown method or vector kind {unknown[0]!r}; methods: {', '.join(METHODS)}; kinds: dense, lora"
        )
    if steps < 1 or warmup < 1 or rank < 1 or not kinds:
        raise UsageError("--steps, --warmup and --rank must be >= 1, and --vector must name a kind")
    dev = resolve_device(device)
    batch = batch_size if batch_size is not None else (128 if dev.type == "cuda" else 32)
    if batch < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch}")
    report = step_cost(arch, batch, steps, warmup, dev, chosen, kinds, rank, out, rotation_rank, compile)
    print_table(report)
    console.print(f"wrote {out / result_stem(dev, compile)}.json and .md")
