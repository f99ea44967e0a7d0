"""The study: bench rows on every rung of the ladder of relatedness, with controls and seeds, resumable.

Each rung is a bench run folder of its own (``<out>/<rung>/``, rows stored one by one),
so a study cut off anywhere resumes at the row it stopped at. Every seed redraws the
few-shot pools and reseeds the alignment and the controls, but keeps the one shipped
pre-trained pair (``SuiteRequest.model_seed = 0``): the intervals are over what a user
of that pair would see, not over pre-training. ``width`` picks the pre-trained models'
width (the shipped 128 by default); models of another width are pre-trained once and cached.

Under torchrun each seed's rows are dealt to the processes
(:func:`orthoxfer.experiments.bench_run.deal_rows`), each row computed by one process alone
and stored in the rung's folder; every process then reads every row back, so rank 0
writes the summary one process would.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from orthoxfer.errors import UsageError
from orthoxfer.experiments.bench import BenchConfig, relatedness, test_accuracy
from orthoxfer.experiments.bench_run import row_path, run_bench
from orthoxfer.experiments.bench_settings import BenchSettings
from orthoxfer.fit import distributed
from orthoxfer.models.pretrain import is_built
from orthoxfer.runs import CONFIG, Run
from orthoxfer.strategies.settings import read_config
from orthoxfer.suites import build_suite, models_record
from orthoxfer.suites.base import SuiteInputs, SuiteRequest
from orthoxfer.suites.mini import HEADROOM_TASKS, PAIRS, pretrain_config
from orthoxfer.vectors.controls import check_task_count

RUNGS = (*PAIRS, "planted")  # the mini ladder, and the planted suite as a positive-control rung
DEFAULT_RUNGS = tuple(PAIRS)
# four tasks, not eight, so that the study fits its budget: the four with most room between few-shot FT and the ceiling
STUDY_TASKS = HEADROOM_TASKS
MODEL_SEED = 0  # every seed uses the shipped pair
PAPER_RUNG = "data"  # the paper's setting: where the study can afford every control, not just the one on every rung


def check_rungs(rungs: tuple[str, ...]) -> tuple[str, ...]:
    """The rungs named, or a one-line UsageError listing the choices."""
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown or not rungs:
        raise UsageError(
            f"unknown rung {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(RUNGS)}"
        )
    return rungs


@dataclass
class StudyTable:
    """The ``[study]`` table of a config: what differs by rung. ``[study.rates.<rung>]`` gives a rung its own
    learning rate per trained method, over ``[bench.rates]``: a rate chosen on a pair's validation data is what a
    user with that pair would choose, and the best rate differs along the ladder (on ``same`` a step away from the
    start only loses, on ``seed`` a long walk wins). ``[study.anchors]`` gives a rung its anchored rows' beta, over
    ``[bench] anchor``, for the same reason: keeping U near a start pays only where the start carries the vector."""

    rates: dict = field(default_factory=dict)
    anchors: dict = field(default_factory=dict)


def _study_table(config: Path | None, key: str) -> dict[str, Any]:
    """``[study.<key>]`` of ``config`` (empty without one), its keys checked as rung names."""
    table = read_config(config, "study", StudyTable).get(key, {}) if config is not None else {}
    for rung in table:
        if rung not in RUNGS:
            raise UsageError(f"config file {config}: [study.{key}] names {rung!r}, not a rung ({', '.join(RUNGS)})")
    return table


def rung_rates(config: Path | None) -> dict[str, dict[str, float]]:
    """``[study.rates.<rung>]`` of ``config``, each a table of rates."""
    rates = _study_table(config, "rates")
    for rung, table in rates.items():
        if not isinstance(table, dict):
            raise UsageError(f"config file {config}: [study.rates.{rung}] must be a table of rates")
    return rates


def rung_anchors(config: Path | None) -> dict[str, float]:
    """``[study.anchors]`` of ``config``: a rung's anchored rows' beta (0 keeps the step selection alone)."""
    anchors = _study_table(config, "anchors")
    for rung, beta in anchors.items():
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
            raise UsageError(f"config file {config}: [study.anchors] {rung} = {beta!r} must be a beta >= 0")
    return anchors


def rung_suite(rung: str) -> tuple[str, str | None]:
    """The suite and ``--pair`` a rung is built from."""
    return ("planted", None) if rung == "planted" else ("mini", rung)


@dataclass
class StudyPlan:
    """What the study runs: rungs x seeds, each rung's rows from the settings resolved for its suite.

    The settings' controls run on every rung; ``rung_controls`` adds more on a named rung
    (the paper's, by default): three controls on every rung would nearly double the
    study's time, where the one control that answers "does the vector carry anything"
    is enough off the paper's setting.
    """

    rungs: tuple[str, ...]
    seeds: int
    tasks: tuple[str, ...]
    size: str
    settings: dict[str, BenchSettings]  # by suite (mini, planted)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache_dir: Path | None = None
    rung_controls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    allow_code_change: bool = False  # resume rows made by other code (each rung's config.json records it)
    width: int | None = None  # the pre-trained models' width; None: the size's own (the shipped 128 at full size)
    rung_rates: dict[str, dict[str, float]] = field(default_factory=dict)  # [study.rates.<rung>], over [bench.rates]
    rung_anchors: dict[str, float] = field(default_factory=dict)  # [study.anchors], over [bench] anchor
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1 (past the seed the settings were chosen on)
    disjoint_pools: bool = False  # pools from a part of the training split the source vectors never saw
    summarise: bool = False  # compute no row: summarise the stored ones (every row must be there)

    def __post_init__(self) -> None:  # before any rung runs, not when the rung that cannot is reached
        self.width = pretrain_config(SuiteRequest(size=self.size, width=self.width)).width  # resolved and checked
        for rung in self.rungs:
            check_task_count(
                self.controls(rung),
                len(self.tasks),
                "--controls"
                if rung not in self.rung_controls
                else f"--controls and --paper-controls (by default it is on {rung})",
            )

    def controls(self, rung: str) -> tuple[str, ...]:
        """The rung's controls: those of every rung first (the plot's is the first), then the rung's own."""
        return tuple(
            dict.fromkeys((*self.settings[rung_suite(rung)[0]].bench.controls, *self.rung_controls.get(rung, ())))
        )

    def bench(self, rung: str) -> BenchConfig:
        """The bench settings of ``rung``'s rows: its suite's, with the rung's controls, rates and anchor."""
        suite = self.settings[rung_suite(rung)[0]].bench
        rates = {**suite.rates, **self.rung_rates.get(rung, {})}
        anchor = {**suite.anchor, **({"anchor": self.rung_anchors[rung]} if rung in self.rung_anchors else {})}
        return dataclasses.replace(suite, controls=self.controls(rung), rates=rates, anchor=anchor)

    def rows(self, rung: str) -> int:
        """Rows one seed of ``rung`` computes (planted adds its ceiling row)."""
        return len(self.bench(rung).rows(planted=rung == "planted"))

    def total_rows(self) -> int:
        return self.seeds * sum(self.rows(r) for r in self.rungs)

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def rung_config(self, rung: str) -> dict[str, Any]:
        """What a rung's config.json holds: the settings that change what its rows compute.

        Seeds, methods and controls are left out: each row is stored on its own, so a
        resumed study may add seeds or methods and reuse every row it already has.
        """
        suite, pair = rung_suite(rung)
        record = self.settings[suite].record()
        record["bench"] = {k: v for k, v in record["bench"].items() if k not in ("methods", "controls")}
        bench = self.bench(rung)
        if bench.rates:  # the rung's own, where it has them
            record["bench"]["rates"] = bench.rates
        record["bench"]["anchor"] = bench.anchor
        return {
            "suite": suite,
            **({"pair": pair} if pair else {}),
            "model_seed": MODEL_SEED,
            "tasks": list(self.tasks),
            "shots": self.settings[suite].shots,
            "size": self.size,
            **models_record(suite, self.size, self.width),
            **record,
            **({"disjoint_pools": True} if self.disjoint_pools else {}),  # absent when off: earlier studies resume
        }


def check_models_built(plan: StudyPlan) -> None:
    """Under torchrun the rungs' pre-trained models must exist before the launch: rank 0 pre-training one (hours at a
    larger width) would keep the other processes waiting at a barrier past its timeout."""
    config = pretrain_config(SuiteRequest(size=plan.size, width=plan.width, model_seed=MODEL_SEED))
    needed = dict.fromkeys(["a", *(PAIRS[pair] for rung in plan.rungs if (pair := rung_suite(rung)[1]) is not None)])
    missing = [which for which in needed if not is_built(which, config, plan.cache_dir)]
    if missing:
        flags = f" --size {plan.size}" if plan.size != "full" else ""
        flags += f" --cache-dir {plan.cache_dir}" if plan.cache_dir is not None else ""
        raise UsageError(
            f"the width-{config.width} models {', '.join(missing)} are not pre-trained yet; under torchrun make them "
            f"first, in one process: orthoxfer mini pretrain --models {','.join(missing)} --width {config.width}{flags}"
        )


@dataclass
class RungResult:
    rung: str
    source: str
    target: str
    tasks: list[str]
    controls: tuple[str, ...]
    records: list[dict[str, Any]]  # every row of every seed, as bench stores them
    relatedness: dict[str, list[dict[str, Any]]]  # seed -> per depth CKA and Procrustes residual
    seconds: float
    # the code versions that made the rows: config.json's, then any the rung was resumed with
    code: list[dict[str, str]] = field(default_factory=list)


def rung_inputs(plan: StudyPlan, rung: str, seed: int) -> SuiteInputs:
    """What one seed of ``rung`` runs on: its pair's models, the seed's pools and the source vectors."""
    suite, pair = rung_suite(rung)
    settings = plan.settings[suite]
    request = SuiteRequest(
        seed=seed,
        model_seed=MODEL_SEED,
        shots=settings.shots,
        size=plan.size,
        width=plan.width,
        pair=pair,
        tasks=plan.tasks,
        kinds=settings.bench.kinds,
        source_ft=settings.source_ft,
        device=plan.device,
        cache_dir=plan.cache_dir,
        disjoint_pools=plan.disjoint_pools,
    )
    return build_suite(suite, request)


def run_rung(plan: StudyPlan, rung: str, out: Path, progress: Callable[[str], None]) -> RungResult:
    """One rung's rows for every seed, in ``out/<rung>``, reusing the rows stored there.

    Rank 0 builds each seed's inputs first: the source vectors it fine-tunes and caches
    the others read, instead of fine-tuning them again into the same files.
    """
    run = Run(out / rung, resume=True)
    config = plan.rung_config(rung)
    if plan.summarise:  # the rows were checked before any rung ran (check_stored): the record they were made under
        recorded = run.stored_config(config) or {}
    else:
        recorded = run.write_config(config, allow_code_change=plan.allow_code_change)
    started = time.perf_counter()
    records, related = [], {}
    for seed in plan.seed_list():
        with distributed.main_first():
            inputs = rung_inputs(plan, rung, seed)
        related[str(seed)] = relatedness(inputs, seed) or []
        records += run_bench(
            inputs, plan.bench(rung), run, [seed], progress=lambda msg: progress(f"{rung}: {msg}"), deal=True
        )
    names = [t.name for t in inputs.tasks]
    return RungResult(
        rung,
        inputs.source_name,
        inputs.target_name,
        names,
        plan.controls(rung),
        records,
        related,
        time.perf_counter() - started,
        [recorded["code"], *recorded.get("resumed_with", [])] if "code" in recorded else [],
    )


def source_ceiling(plan: StudyPlan) -> list[float] | None:
    """The source's own fine-tuned accuracy per seed (its vectors at lambda = 1 on the source, read with the source's
    heads), for a mini study that runs no ``same`` rung to record it in its direct row: the width ladder runs
    ``data`` and ``release`` only, and its regime check "ceiling - few-shot FT" needs it. None where ``same`` runs."""
    if "same" in plan.rungs or not any(rung_suite(r)[1] for r in plan.rungs):
        return None
    bench = plan.bench(next(r for r in plan.rungs if rung_suite(r)[1]))
    values = []
    for seed in plan.seed_list():
        with distributed.main_first():
            inputs = rung_inputs(plan, "same", seed)  # target = source: the source's heads and test splits
        vectors = inputs.vectors[bench.kinds[0]]
        at_one = {t.name: vectors[t.name].added_to_copy(inputs.target) for t in inputs.tasks}
        values.append(test_accuracy(at_one, inputs, bench.align.device)["mean"])
    return values


def check_stored(plan: StudyPlan, rung: str, out: Path) -> None:
    """A summary of stored rows needs the rung's settings as they were run and every row of every seed, under whatever
    code made them (the summary records it): a one-line error otherwise, made for every rung before any runs."""
    if not (out / rung / CONFIG).is_file():  # before Run would make the folder
        raise UsageError(f"no study rows in {out / rung}: run the study (without --summarise) first")
    run = Run(out / rung, resume=True)
    run.stored_config(plan.rung_config(rung), "summarise with the settings the study ran with")
    rows = plan.bench(rung).rows(planted=rung == "planted")
    missing = [f"seed {s}: {sum(not row_path(run, r, s).exists() for r in rows)}" for s in plan.seed_list()]
    missing = [m for m in missing if not m.endswith(": 0")]
    if missing:
        raise UsageError(
            f"{rung}: rows not computed yet ({', '.join(missing)} of {len(rows)}); finish them with --resume, or "
            "summarise fewer --seeds"
        )
