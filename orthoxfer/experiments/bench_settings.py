"""A benchmark's settings, resolved once for every command that runs bench rows (``bench``, ``study``).

They resolve as the suite's defaults <- a TOML config (tables ``[finetune]`` for source
vectors, ``[align]`` with the pools' ``shots``, ``augmentation`` and the ``mode``,
``[fewshot_ft]``, ``[bench]`` with the lambda grid ``scales``, the held-out
``val_fraction``, the anchored rows' ``anchor`` and ``select_every`` and a rate per
trained method in ``[bench.rates]``; other tables are left to other commands) <- flags. The held-out
fraction, unless set, is 0.2 where something is chosen on it (more than one lambda or
learning rate) and 0 where nothing is (one lambda: fixed, as the paper's text fixes it).
Keeping this in one place keeps the study's rows the rows ``bench`` would compute with
the same flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orthoxfer.evaluation.baselines import SCALES
from orthoxfer.experiments.bench import ANCHORED, BenchConfig
from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.strategies.settings import AlignSettings, read_config
from orthoxfer.suites import default_tables
from orthoxfer.suites.mini import default_shots
from orthoxfer.transfers.registry import declared_options as transfer_options
from orthoxfer.vectors.controls import check_task_count

SCHEMAS = {"finetune": FinetuneSettings, "align": AlignSettings, "fewshot_ft": FinetuneSettings}
HELD_OUT = 0.2  # the part of each pool held out when something is chosen on it and no fraction is given


@dataclass
class BenchTable:
    """The ``[bench]`` table of a config: what bench chooses on held-out data, and how much of each pool that is."""

    scales: tuple = SCALES  # the lambda grid; one value fixes lambda
    val_fraction: float = HELD_OUT  # 0: nothing held out (then one lambda and one lr)
    anchor: float = ANCHORED["anchor"]  # beta of the anchored rows (chosen on validation: study-v2/select-anchors-*)
    select_every: int = int(ANCHORED["select_every"])  # the anchored rows' validation interval
    step_at_best_scale: bool = False  # a step chosen on validation is scored at its best lambda (BenchConfig)
    rates: dict = dataclasses.field(default_factory=dict)  # [bench.rates]: a learning rate per trained method


@dataclass
class BenchSettings:
    tables: dict[str, dict[str, Any]]  # the resolved [finetune], [align], [fewshot_ft] tables, as recorded
    shots: int
    transfer: dict[str, Any]  # the transfer methods' options given as flags
    chosen: dict[str, Any]  # the BenchConfig fields the flags, config or suite set (methods, controls, mode ...)
    source_ft: FinetuneSettings  # how the source vectors are fine-tuned
    bench: BenchConfig

    def record(self) -> dict[str, Any]:
        """What a run's config.json holds of these settings: the tables, transfer options and chosen fields (the lambda
        grid and held-out fraction only where they are not the defaults, so runs made before they could be set
        resume)."""
        defaults = {"scales": SCALES, "val_fraction": HELD_OUT}
        chosen = {k: v for k, v in self.chosen.items() if v is not None and not (k in defaults and v == defaults[k])}
        return {
            **self.tables,
            **({"transfer": self.transfer} if self.transfer else {}),
            "bench": {k: list(v) if isinstance(v, tuple) else v for k, v in chosen.items()},
        }


def resolve_bench(
    suite: str,
    size: str,
    device: torch.device,
    config: Path | None = None,
    shots: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    strategy_options: dict[str, Any] | None = None,
    choices: dict[str, Any] | None = None,
    tasks: int | None = None,
) -> BenchSettings:
    """Defaults <- config <- flags. ``strategy_options`` holds strategy and transfer flags alike (the transfer ones
    are split off); ``choices`` the parsed BenchConfig flags (methods, kinds, controls, procrustes_init, ties, lrs,
    mode), None where not given: ties default to the align table's tie, mode to its mode, else joint for the paper
    suite and per-task otherwise. ``tasks``: how many tasks the run has (None: all the suite's), which sets the
    suite's default budget and is checked against the controls here, before a command makes its run folder."""
    tables = default_tables(suite, size, tasks)
    table: dict[str, Any] = {}
    if config is not None:
        for section, schema in SCHEMAS.items():
            tables[section].update(read_config(config, section, schema))
        table = read_config(config, "bench", BenchTable)
    if shots is None:  # the flag, else the config's [align] shots, else the suite's
        shots = tables["align"].get("shots", default_shots(size))
    options = dict(strategy_options or {})
    transfer = {name: options.pop(name) for name in transfer_options() if name in options}
    flags = {"steps": steps, "lr": lr, **options}
    tables["align"].update({k: v for k, v in flags.items() if v is not None})
    if steps is not None:
        tables["fewshot_ft"]["steps"] = steps
    align_settings = AlignSettings(**{**tables["align"], "shots": shots, "device": str(device)})
    fewshot_ft = FinetuneSettings(**{**tables["fewshot_ft"], "kind": "embed", "device": str(device)})
    source_ft = FinetuneSettings(**{**tables["finetune"], "device": str(device)})
    chosen = dict(choices or {})
    for key, value in table.items():  # [bench] of the config, where no flag gave the value
        chosen[key] = value if chosen.get(key) is None else chosen[key]
    if chosen.get("scales") is not None:
        chosen["scales"] = tuple(float(s) for s in chosen["scales"])
    anchored = {k: chosen.pop(k) for k in ANCHORED if k in chosen}  # the table's keys, one BenchConfig field
    if anchored:
        chosen["anchor"] = {**ANCHORED, **anchored}
    if chosen.get("val_fraction") is None:  # held out only where something is chosen on it
        grid = (chosen.get("scales") or SCALES, chosen.get("lrs") or ())
        chosen["val_fraction"] = HELD_OUT if len(grid[0]) > 1 or len(grid[1]) > 1 else 0.0
    chosen["ties"] = chosen.get("ties") or (align_settings.tie,)
    chosen["mode"] = chosen.get("mode") or tables["align"].get("mode") or ("joint" if suite == "paper" else "per-task")
    bench = BenchConfig(align=align_settings, fewshot_ft=fewshot_ft, transfer=transfer)
    bench = dataclasses.replace(bench, **{k: v for k, v in chosen.items() if v is not None})
    if tasks is not None:  # None: the suite's own tasks, which run_bench checks once they are built
        check_task_count(bench.controls, tasks)
    bench.check_validation(held_out=suite == "paper")  # before a command makes its run folder
    return BenchSettings(tables, shots, transfer, chosen, source_ft, bench)
