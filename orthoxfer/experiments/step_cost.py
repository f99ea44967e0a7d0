"""What one alignment step costs, against plain fine-tuning of the same sites (``orthoxfer bench-speed``).

Every row is timed in one process, after warm-up, in rounds: each round runs every row
once, starting at a different row, with a floor step before every two rows and one at
the end. A row's ratio to the floor is the median over rounds of its time over the mean
of the two floor steps around it, so load from other processes that drifts during the
run (minutes) cancels; its seconds per step are the median over rounds. The rows:

- ``floor``: :class:`orthoxfer.fit.finetune.FinetuneStep` (kind ``embed``): the target with a free
  AdamW delta on each site, through the same ``functional_call`` path alignment uses;
- ``penalty``, ``riemannian-qr``, ``riemannian-cayley``, ``cayley``: the real
  :class:`orthoxfer.fit.align_step.AlignStep` of each strategy, and with ``--rotation-rank k``
  each again with a rank-k rotation (its step rotates the vector from the factors);
- ``procrustes``: the whole closed-form solve for all sites (inputs captured on one batch
  through target and source, one SVD per site), timed once per round;
- ``activation``: the penalty strategy with the reference code's activation-side forward
  (:mod:`orthoxfer.experiments.activation_side`, a comparison point);
- ``theseus``, ``gradfix-majority``, ``gradfix-mean``, ``transfusion``, ``bico``: one whole transfer of the
  dense vector by each transfer method (:mod:`orthoxfer.experiments.transfer_cost`; transfusion
  with one matching round, its cost per round of ``--transfusion-rounds``), timed once per round.

Memory, measured in one extra untimed round so that measuring never slows a timed step:
``state`` is what a method keeps between steps (parameters, optimiser state, stacked task
vector; the shared model and batch are not counted), ``step`` the peak a step adds above
what was resident before it: on CPU peak RSS (VmHWM, reset through /proc/self/clear_refs
after ``malloc_trim``) minus RSS before, on GPU ``max_memory_allocated`` minus
``memory_allocated`` before. GFLOP per step are matmul FLOPs counted by
``torch.utils.flop_counter`` on the first warm-up step (factorisations, triangular solves
and elementwise work are not counted).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from orthoxfer.artifacts import write_text
from orthoxfer.errors import UsageError
from orthoxfer.experiments.activation_side import ActivationSideStep
from orthoxfer.experiments.timing_models import build_models
from orthoxfer.experiments.transfer_cost import (
    LABELS,
    ROWS,
    learnt_bytes,
    transfer_runs,
)
from orthoxfer.fit.align_step import AlignStep
from orthoxfer.fit.finetune import FinetuneSettings, FinetuneStep
from orthoxfer.problem.align_problem import ScopedProblem, group_sites
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.strategies.procrustes import procrustes_fit
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.strategies.trained import TrainedStrategy, identity_stacks
from orthoxfer.terminal import stage_progress
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import TaskVector

if TYPE_CHECKING:
    from orthoxfer.transfers.base import Transferred
from orthoxfer.version import __version__

TRAINED = {
    "penalty": {},
    "riemannian-qr": {"retraction": "qr"},
    "riemannian-cayley": {"retraction": "cayley"},
    "cayley": {},
}
METHODS = ("floor", *TRAINED, "procrustes", "activation", *ROWS)
GOAL = 1.15  # the target: a trained strategy's step at most 1.15x the floor


@dataclass
class TimedRow:
    """One timed thing: a step (or for procrustes the whole solve) and what it keeps."""

    name: str
    vector: str
    run: Callable[[], Any]
    state_bytes: Callable[[], int]
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # time over the mean of the floor steps around it
    gflop: float | None = None
    step_bytes: int | None = None
    trained: bool = False  # a trained strategy's step: measured against the goal


class PeakMemory:
    """Peak memory a block adds above what is resident when it starts (see the module docstring)."""

    libc = ctypes.CDLL("libc.so.6") if platform.system() == "Linux" else None

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes: int | None = None
        self.base: int | None = None

    def __enter__(self) -> PeakMemory:

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        if self.libc is not None:
            self.libc.malloc_trim(0)  # freed heap memory would otherwise hide a step's allocations
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.base = _status_kb("VmRSS") * 1024
        except OSError:
            self.base = None  # no procfs: memory is reported as unknown
        return self

    def __exit__(self, *exc) -> None:

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.base is None:  # no procfs
            return
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.bytes = _status_kb("VmHWM") * 1024 - self.base


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def trained_strategy(name: str) -> TrainedStrategy:
    """A strategy that has a step to time; the closed-form ones are timed as a whole solve instead."""
    strategy = STRATEGIES[name]()
    if not isinstance(strategy, TrainedStrategy):
        raise UsageError(f"{name} is solved in closed form: it has no step to time")
    return strategy


def task_vector(sites: list, kind: str, rank: int):
    """A seeded task vector of the right shapes: timing does not depend on its values."""

    g = torch.Generator().manual_seed(0)
    if kind == "lora":
        factors = {
            s.name: (0.01 * torch.randn(rank, s.dim, generator=g), 0.01 * torch.randn(s.dim, rank, generator=g))
            for s in sites
        }
        return TaskVector(lora=factors, scale=2.0)
    return TaskVector({s.name: 1e-3 * torch.randn(s.dim, s.dim, generator=g) for s in sites})


def state_bytes(step) -> int:
    """Bytes a stepper keeps between steps: its parameters and buffers, optimiser state, stacked task vector."""

    tensors = [*step.module.parameters(), *step.module.buffers()]
    tensors += [t for s in step.optimiser.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    tensors += [t for v in getattr(step, "vectors", []) for t in (v.dw, v.a, v.b) if t is not None]
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def build_rows(
    arch: str,
    batch_size: int,
    device: torch.device,
    methods: list[str],
    vectors: list[str],
    rank: int,
    rotation_rank: int = 0,
    compile: bool = False,
) -> tuple[list[TimedRow], dict[str, Any]]:
    """Every row's callable on one shared target, batch and head."""

    target, source = build_models(arch, device)
    sites = find_sites(target, "attn")
    groups = group_sites(sites, "site")
    size = target.visual.image_size
    height, width = size if isinstance(size, tuple) else (size, size)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 3, height, width), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch_size,), generator=g)
    head = nn.Linear(target.visual.output_dim, 10).requires_grad_(False).to(device)
    task = FewShotTask("bench", images, labels, head)
    x, y = task.normalise(images).to(device), labels.to(device)
    settings = AlignSettings(
        lr=1e-3, warmup=0, batch_size=batch_size, device=str(device), log_every=0, checkpoint_every=0, compile=compile
    )

    def step_row(name: str, vector: str, step, trained: bool = False) -> TimedRow:
        return TimedRow(name, vector, lambda: step(x, y, head), lambda: state_bytes(step), trained=trained)

    floor = FinetuneStep(
        target,
        sites,
        FinetuneSettings(
            kind="embed",
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            clip=settings.clip,
            device=str(device),
            compile=compile,
        ),
    )
    rows = [step_row("floor", "-", floor)]
    for kind in vectors:
        tv = task_vector(sites, kind, rank)
        problem = ScopedProblem("joint", target, tv, {"bench": task}, sites, source)
        label = kind if kind == "dense" else f"lora r{rank}"
        for k in (0, rotation_rank) if rotation_rank else (0,):
            for name in [m for m in methods if m in TRAINED]:
                method = name.split("-")[0]
                s = settings.replace(method=method, rotation_rank=k, **TRAINED[name])
                step = AlignStep(trained_strategy(method), problem, groups, identity_stacks(groups), s)
                rows.append(step_row(name + (f" rank {k}" if k else ""), label, step, trained=True))
        if "activation" in methods:
            s = settings.replace(method="penalty")
            step = ActivationSideStep(STRATEGIES["penalty"](), problem, groups, identity_stacks(groups), s)
            rows.append(step_row("activation", label, step))
    if "procrustes" in methods:
        problem = ScopedProblem("joint", target, TaskVector(), {"bench": task}, sites, source)  # needs no vector
        s = settings.replace(method="procrustes")
        result: list = []

        def solve() -> None:
            result[:] = procrustes_fit(problem, groups, s)[0]

        rows.append(TimedRow("procrustes", "-", solve, lambda: sum(t.numel() * t.element_size() for t in result)))
    done: dict[str, Transferred] = {}

    def transfer_row(name: str, transfer: Callable[[], Transferred]) -> TimedRow:
        return TimedRow(name, "-", lambda: done.update({name: transfer()}), lambda: learnt_bytes(done.get(name)))

    for name, transfer in transfer_runs(methods, task_vector(sites, "dense", rank), source, target, task, device):
        rows.append(transfer_row(name, transfer))
    d = sites[0].dim
    meta = {"sites": len(sites), "d": d, "dense_rotation_gflop": 10 * d**3 * len(sites) / 1e9}
    return rows, meta


def timed(row: TimedRow, device: torch.device) -> float:

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    row.run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def machine(device: torch.device) -> dict[str, Any]:

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    info = {
        "device": device.type,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def step_cost(
    arch: str,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    methods: list[str],
    vectors: list[str],
    rank: int,
    out: Path,
    rotation_rank: int = 0,
    compile: bool = False,
) -> dict[str, Any]:
    """Run the benchmark, write ``step_cost-<device>[-compiled].json`` and ``.md`` to ``out``, return the report."""

    load_before = os.getloadavg()
    rows, meta = build_rows(arch, batch_size, device, methods, vectors, rank, rotation_rank, compile)
    floor, others = rows[0], rows[1:]
    for row in rows:
        if compile:  # the first step compiles; FLOPs are not counted here (an eager run counts the same matmuls)
            row.run()
            continue
        with FlopCounterMode(display=False) as flops:
            row.run()
        row.gflop = flops.get_total_flops() / 1e9
    for _ in range(warmup - 1):
        for row in rows:
            row.run()
    with stage_progress() as bar:
        job = bar.add_task("step cost", total=steps, status="")
        for r in range(steps):
            order = others[r % len(others) :] + others[: r % len(others)] if others else []
            before, pending = timed(floor, device), []
            floor.times.append(before)
            for k, row in enumerate(order):
                row.times.append(timed(row, device))
                pending.append(row)
                if k % 2 == 1 or k == len(order) - 1:
                    after = timed(floor, device)
                    floor.times.append(after)
                    for done in pending:
                        done.ratios.append(done.times[-1] / ((before + after) / 2))
                    before, pending = after, []
            bar.update(job, completed=r + 1)
    for row in rows:
        with PeakMemory(device) as mem:
            row.run()
        row.step_bytes = mem.bytes
    report = step_cost_report(
        rows,
        meta,
        {
            "arch": arch,
            "batch_size": batch_size,
            "steps": steps,
            "warmup": warmup,
            "vectors": vectors,
            "rank": rank,
            "rotation_rank": rotation_rank,
            "lr": 1e-3,
            "compile": compile,
        },
        dict(machine(device), load_before=load_before, load_after=os.getloadavg()),
    )
    out.mkdir(parents=True, exist_ok=True)
    stem = result_stem(device, compile)
    write_text(out / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    write_text(out / f"{stem}.md", markdown(report))
    return report


def result_stem(device: torch.device, compile: bool) -> str:
    return f"step_cost-{device.type}" + ("-compiled" if compile else "")


def step_cost_report(
    rows: list[TimedRow], meta: dict[str, Any], settings: dict[str, Any], host: dict[str, Any]
) -> dict[str, Any]:
    """Medians, paired ratios to the floor, and the arithmetic that bounds them."""
    batch = settings["batch_size"]
    out = []
    for row in rows:
        ratio = statistics.median(row.ratios) if row.ratios else 1.0
        entry = {
            "method": row.name,
            "vector": row.vector,
            "median_s": statistics.median(row.times),
            "times_s": row.times,
            "ratio_to_floor": ratio,
            "ratios": row.ratios,
            "gflop": row.gflop,
            "state_mb": row.state_bytes() / 2**20,
            "step_peak_mb": None if row.step_bytes is None else row.step_bytes / 2**20,
        }
        if row.trained:
            entry["meets_goal"] = ratio <= GOAL
            # the U maths does not grow with the batch, the floor does (about linearly); the
            # activation side is left out: its extra cost grows with the batch like the floor's
            entry["batch_for_goal_estimate"] = None if ratio <= 1 else batch * (ratio - 1) / (GOAL - 1)
        out.append(entry)
    floor_gflop = rows[0].gflop
    arithmetic = dict(
        meta,
        floor_gflop=floor_gflop,
        dense_rotation_fraction_of_floor=meta["dense_rotation_gflop"] / floor_gflop if floor_gflop else None,
    )
    return {
        "benchmark": "step_cost",
        "orthoxfer": __version__,
        "machine": host,
        "settings": dict(settings, **meta),
        "goal_ratio": GOAL,
        "rows": out,
        "arithmetic": arithmetic,
    }


def number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown(report: dict[str, Any]) -> str:
    """The table README quotes, with the machine and the arithmetic under it."""
    s, m, a = report["settings"], report["machine"], report["arithmetic"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads"
    lines = [
        f"### Step cost: {s['arch']}, {s['sites']} attention sites (d = {s['d']}), batch {s['batch_size']}, {m['device']}",
        "",
        f"{where}; torch {m['torch']}; "
        + ("every row's target forward through torch.compile; " if s.get("compile") else "")
        + f"load average {m['load_before'][0]:.1f} before, {m['load_after'][0]:.1f} after. "
        f"Median of {s['steps']} timed steps per row after {s['warmup']} warm-up, rows interleaved in one process; "
        "x floor: median over rounds of a step's time over the mean of the two floor steps timed around it. "
        "GFLOP: matmul FLOPs of one step counted by torch.utils.flop_counter (factorisations and triangular solves "
        "not counted). State: what a method keeps between steps (parameters, optimiser state, stacked task vector). "
        + (
            "Step peak: the most memory a step allocates above what is allocated before it (CUDA allocator)."
            if m["device"] == "cuda"
            else "Step peak: the peak resident memory a step adds above the resident memory before it (VmHWM after a reset)."
        ),
        "",
        "| method | task vector | s/step | x floor | GFLOP/step | state MB | step peak MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        name = {
            "floor": "floor: fine-tune the sites (AdamW)",
            "procrustes": "procrustes (whole solve)",
            "activation": "activation-side (reference code), penalty",
            **LABELS,
        }.get(r["method"], r["method"])
        lines.append(
            f"| {name} | {r['vector']} | {r['median_s']:.3g} | {r['ratio_to_floor']:.2f} | {number(r['gflop'])} | "
            f"{number(r['state_mb'])} | {number(r['step_peak_mb'])} |"
        )
    lines.append("")
    if a["dense_rotation_fraction_of_floor"] is not None:
        lines.append(
            f"A dense `U^T dW U` costs 5 d^3 multiply-adds per site per step (2 forward, 3 backward): "
            f"{number(a['dense_rotation_gflop'])} GFLOP, {a['dense_rotation_fraction_of_floor']:.0%} of the floor's "
            f"{number(a['floor_gflop'])} counted GFLOP, before any strategy's own U maths."
        )
    goal = report["goal_ratio"]
    trained = [r for r in report["rows"] if "meets_goal" in r]
    met = [f"{r['method']} ({r['vector']})" for r in trained if r["meets_goal"]]
    lines.append(f"Goal, a step at most {goal:.2f}x the floor at this batch: met by {', '.join(met) or 'no row'}.")
    estimates = [
        f"{r['method']} ({r['vector']}) ~{r['batch_for_goal_estimate']:.0f}"
        for r in trained
        if not r["meets_goal"] and r["batch_for_goal_estimate"] is not None
    ]
    if estimates:
        lines.append(
            "Batch size at which the others would meet it, estimated from these timings (their extra "
            f"seconds fixed, the floor linear in the batch): {', '.join(estimates)}."
        )
    return "\n".join(lines) + "\n"
