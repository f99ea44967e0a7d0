"""The benchmark: the paper's Table 1 as rows of methods x tasks, with diagnostics and controls.

Every row is computed the same way: a task vector (or none), a way to carry it into
the target (nothing, an alignment strategy, a transfer method such as ``gradfix``, or
few-shot fine-tuning), a lambda chosen on validation data (the suite's validation set, or a held-out part of
the few-shot pools; never test) or fixed (a grid of one, as the paper's text fixes it at 1: then no pool is held out
and no validation image is read), then top-1 accuracy on each task's test split. Each row is stored in the run folder as soon as it is done,
so an interrupted benchmark resumes where it stopped (:mod:`orthoxfer.experiments.bench_run` runs them).

Controls (``norm``, ``spectrum``, ``orbit``, ``other-task``) are the same methods applied
to vectors that carry no knowledge of the task; **transfer gain** = accuracy(carried real
vector) - accuracy(same method on the control). A method only gets the controls valid for
it (:func:`~orthoxfer.vectors.controls.valid_controls`: no ``orbit`` for the trained aligners).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from orthoxfer.alignment.align import align
from orthoxfer.alignment.artifact import rotate
from orthoxfer.alignment.start import check_init, start_from
from orthoxfer.errors import UsageError
from orthoxfer.evaluation.accuracy import evaluate, pool_accuracy
from orthoxfer.evaluation.baselines import SCALES, Scaled, direct_addition
from orthoxfer.evaluation.relate import relate
from orthoxfer.experiments.auto import AUTO
from orthoxfer.experiments.tune import chosen_steps, finetune_updates, task_share, transfer_then_tune
from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.models.planted import recovery_error
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import Run
from orthoxfer.strategies.base import Strategy
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.strategies.settings import CHOICES, AlignSettings
from orthoxfer.strategies.trained import TrainedStrategy
from orthoxfer.suites.base import SuiteInputs
from orthoxfer.transfers.carry import carry
from orthoxfer.transfers.registry import (
    TRANSFERS,
    check_method,
    method_fits_similarity,
    method_needs,
    transfer_settings,
)
from orthoxfer.vectors.controls import CONTROLS, control_vectors, valid_controls
from orthoxfer.vectors.reference import reference_lora_sum
from orthoxfer.vectors.taskvector import TaskVector
from orthoxfer.version import source_digest

# an anchored row: beta ||U - U0||^2 keeps U near its start, and the step is chosen on validation every 10 steps.
# beta 0 by default (the step's choice alone keeps a start that carries): chosen on validation along the ladder, a
# beta of 0.1 cost 15-21 points where the start carries nothing (study-v2/select-anchors-*.json)
ANCHORED = {"anchor": 0.0, "select_every": 10}
LR_GROWTH = 2  # a learning-rate grid whose edge rate wins grows past it by x3 (or /3) steps, at most this many


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    kind: str  # embed | lora | "" (no task vector)
    method: str  # target | finetune | direct | oracle | tune | auto | a strategy or transfer name
    init: str = "identity"  # an aligner's start; a tune row's start: direct or a transfer method
    control: str = ""  # "" = the real vector
    tie: str = "site"  # how many sites share one U (alignment rows only)
    anchored: bool = False  # an aligner kept near its start (BenchConfig.anchor) with its step chosen on validation

    @property
    def needs(self) -> str:
        """The data the row's way of carrying saw beyond the vector: labels | images | none."""
        if self.method in ("target", "direct", "oracle"):
            return "none"
        return "labels" if self.method in ("finetune", "tune", "auto") else method_needs(self.method)

    @property
    def id(self) -> str:
        parts = [self.kind or "none", self.method]
        parts += [f"tie-{self.tie}"] if self.tie != "site" else []
        parts += [f"init-{self.init}"] if self.init != "identity" else []
        parts += ["anchored"] if self.anchored else []
        parts += [f"control-{self.control}"] if self.control else []
        return "_".join(parts)

    @property
    def label(self) -> str:
        if self.method in LABELS:
            return LABELS[self.method]
        if self.method == "oracle":
            return f"{self.kind}, U = U* (ceiling)"
        if self.method == "tune":
            text = f"{self.kind}, {'direct addition' if self.init == 'direct' else self.init} then few-shot FT"
        else:
            text = f"{self.kind}, " + ("direct addition" if self.method == "direct" else self.method)
        text += f" (tie {self.tie})" if self.tie != "site" else ""
        text += f" (init {self.init})" if self.init != "identity" and self.method != "tune" else ""
        text += " (anchored)" if self.anchored else ""
        return text + (f" [control: {self.control}]" if self.control else "")


LABELS = {"target": "target only", "finetune": "target few-shot FT", AUTO: "auto (chosen on validation)"}


@dataclass
class BenchConfig:
    methods: tuple[str, ...] = ("penalty", "riemannian", "cayley", "procrustes")  # strategies and transfer methods
    procrustes_init: bool = True  # also each trained strategy started at the closed form
    kinds: tuple[str, ...] = ("embed", "lora")
    lora_methods: tuple[str, ...] = ("penalty",)  # strategies with LoRA rows too (transfer methods always have them)
    controls: tuple[str, ...] = ()
    ties: tuple[str, ...] = ("site",)  # each alignment row once per tie option
    lrs: tuple[
        float, ...
    ] = ()  # learning rates tried by every trained row (aligners and few-shot FT); () = the set one
    # joint: the summed vectors, one lambda | per-task: each task its own vector, U's and lambda | per-task-summed:
    # each task its own U's, the carried vectors summed into one model with one lambda (the paper's Sec. 4.2)
    mode: str = "joint"
    val_fraction: float = 0.2  # the part of each pool held out to choose lambda (and lr) on; 0: none, nothing chosen
    scales: tuple[float, ...] = SCALES  # the lambda grid; one value: lambda fixed, chosen on nothing
    # LoRA vectors summed as the released code sums them, (sum B)(A0 + sum dA), not sum B A: for comparison only
    reference_lora_sum: bool = False
    align: AlignSettings = field(default_factory=AlignSettings)
    fewshot_ft: FinetuneSettings = field(default_factory=FinetuneSettings)
    transfer: dict[str, Any] = field(default_factory=dict)  # the transfer methods' declared options (gradfix_shots ...)
    anchored: tuple[str, ...] = ()  # starts (identity, procrustes, a transfer) of each trained method's anchored rows
    anchor: dict[str, Any] = field(default_factory=lambda: dict(ANCHORED))  # the anchored rows' settings
    # a learning rate per trained method (a strategy, finetune, tune: see rate()), chosen once on validation where
    # one rate does not fit every method; the others, and every method when --lrs gives a grid, as the grid or the
    # set one
    rates: dict[str, float] = field(default_factory=dict)
    tune_from: tuple[str, ...] = ()  # starts (direct, a transfer) of transfer-then-tune rows
    auto: bool = False  # the auto row: per task, the computed row best on validation (per-task mode)
    # where a row's step is chosen on validation and its lambda after it (the anchored rows, few-shot FT; any trained
    # row under [align] select_every; not transfer-then-tune, whose lambda comes first), each scored step is tried at
    # the grid's lambdas as lambda is then chosen, so that step and lambda are chosen together; not in per-task-summed
    # mode, whose lambda is chosen for the summed model, which no task's step sees; off: scored at the training
    # scale, lambda chosen after (how study-v2's rows were made)
    step_at_best_scale: bool = False

    def __post_init__(self) -> None:
        for method in self.methods:
            check_method(method)
        transfer_settings(self.transfer)
        for c in self.controls:
            if c not in CONTROLS:
                raise UsageError(f"unknown control {c!r}; choose from {', '.join(CONTROLS)}")
        if self.mode not in CHOICES["mode"]:
            raise UsageError(f"unknown mode {self.mode!r}; choose from {', '.join(CHOICES['mode'])}")
        for tie in self.ties:
            if tie not in CHOICES["tie"]:
                raise UsageError(f"unknown tie {tie!r}; choose from {', '.join(CHOICES['tie'])}")
        for init in self.anchored:
            check_init(init)
        for start in self.tune_from:
            if start != "direct" and start not in TRANSFERS:
                raise UsageError(
                    f"unknown start {start!r} for transfer-then-tune; choose direct or {', '.join(TRANSFERS)}"
                )
        if (self.auto or self.tune_from) and self.mode != "per-task":
            raise UsageError("the auto and transfer-then-tune rows work per task: they need --mode per-task")
        if not self.scales:
            raise UsageError("--scales needs at least one lambda")
        for key, rate in self.rates.items():
            method, _, control = key.partition("/")
            if (
                not _trained(method)
                or (control and control not in CONTROLS)
                or not isinstance(rate, (int, float))
                or isinstance(rate, bool)
                or rate <= 0
            ):
                raise UsageError(
                    f"rates: {key} = {rate!r} is not a positive rate of a trained method"
                    f" ({', '.join(m for m in ('finetune', 'tune', *STRATEGIES) if _trained(m))}),"
                    f" or of its rows on a control ('<method>/<control>', controls {', '.join(CONTROLS)})"
                )
        if not 0 <= self.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.reference_lora_sum and self.mode != "joint":
            raise UsageError("--reference-lora-sum reproduces the released code's joint sum: use --mode joint")

    def rate(self, method: str, control: str = "") -> float | None:
        """A method's own learning rate (None: the one its settings table sets); transfer-then-tune, few-shot FT
        started from a carried vector, takes few-shot FT's unless given its own.

        A row on a control takes ``<method>/<control>`` where given: a rate chosen on the real vector's validation
        suits the real vector, and a control run at it would measure how ill the rate fits the control beside what
        the vector carries. Without one it takes the method's."""
        own = self.rates.get(method, self.rates.get("finetune") if method == "tune" else None)
        return self.rates.get(f"{method}/{control}", own) if control else own

    @property
    def chooses(self) -> bool:
        """Whether anything is chosen on held-out data: more than one lambda, or more than one learning rate."""
        return len(self.scales) > 1 or len(self.lrs) > 1

    def check_validation(self, held_out: bool) -> None:
        """A run that must hold out part of its pools (``held_out``: the suite has no validation set) needs a
        fraction to hold out whenever it chooses something."""
        if held_out and self.val_fraction == 0 and self.chooses:
            raise UsageError(
                "--val-fraction 0 holds nothing out to choose lambda or lr on: give one --scales value and one --lrs"
            )

    def rows(self, planted: bool = False) -> list[Row]:
        """The table's rows; a planted target adds the ceiling row, the vector carried by the planted U*."""
        rows = [Row("", "target"), Row("", "finetune")]
        for kind in self.kinds:
            rows.append(Row(kind, "direct"))
            rows.extend([Row(kind, "oracle")] if planted else [])
            methods = (
                self.methods
                if kind == "embed"
                else tuple(m for m in self.methods if m in self.lora_methods or m in TRANSFERS)
            )
            for method in methods:
                controls = valid_controls(self.controls, method_fits_similarity(method))
                if method in TRANSFERS:  # no U: no init, no tie
                    rows.extend(Row(kind, method, control=c) for c in ("", *controls))
                    continue
                inits = ["identity"] + (["procrustes"] if self.procrustes_init and method != "procrustes" else [])
                for tie in self.ties:
                    for init in inits:
                        rows.append(Row(kind, method, init, tie=tie))
                        if init == "identity":
                            rows.extend(Row(kind, method, init, c, tie) for c in controls)
                if method_fits_similarity(method):
                    for init in self.anchored:
                        rows.extend(Row(kind, method, init, c, anchored=True) for c in ("", *controls))
            for start in self.tune_from if kind == "embed" else ():
                rows.extend(Row(kind, "tune", start, c) for c in ("", *self.controls))
        return rows + ([Row("", AUTO)] if self.auto else [])


def split_pools(
    inputs: SuiteInputs, fraction: float, seed: int
) -> tuple[dict[str, FewShotTask], dict[str, FewShotTask]]:
    """What every method trains on and where its settings are chosen: the whole pool and the suite's validation set
    where the suite has one (mini, planted), else a held-out ``fraction`` of the pool (paper); with ``fraction`` 0 the
    whole pool and no validation data at all (``val`` is empty: nothing is chosen)."""
    train, val = {}, {}
    for t in inputs.tasks:
        if t.val is not None:
            train[t.name], val[t.name] = t.pool, t.val
        elif fraction == 0:
            train[t.name] = t.pool
        else:
            train[t.name], val[t.name] = t.pool.split(fraction, seed)
    return train, val


def test_accuracy(models: dict[str, nn.Module], inputs: SuiteInputs, device: str) -> dict[str, float]:
    """Test accuracy of each task's model (one shared model in joint mode) and their unweighted mean."""
    scores = {
        t.name: evaluate(models[t.name], {t.name: (t.test[0], t.test[1]())}, device, progress=False)[t.name]
        for t in inputs.tasks
    }
    return {**scores, "mean": sum(scores.values()) / len(scores)}


def row_vectors(row: Row, inputs: SuiteInputs, seed: int) -> dict[str, TaskVector]:
    """The task vectors a row carries, by task: the real ones, or their controls."""
    vectors = {t.name: inputs.vectors[row.kind][t.name] for t in inputs.tasks}
    return control_vectors(vectors, row.control, seed) if row.control else vectors


def _mean_diagnostics(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-task alignments' diagnostics as one: means of the measures, the fewest sites whose rank was kept."""
    return {
        k: (min if isinstance(v, int) else lambda xs: sum(xs) / len(xs))([r[k] for r in reports])
        for k, v in reports[0].items()
        if isinstance(v, (int, float))
    }


def run_row(row: Row, inputs: SuiteInputs, config: BenchConfig, run: Run, seed: int) -> dict[str, Any]:
    """Compute one row; its record holds accuracies, the chosen lambda (and lr), diagnostics and wall time.

    Everything is chosen first (:func:`choose_row`); only then is test data read, once.
    """
    started = time.perf_counter()
    models, record = choose_row(row, inputs, config, run, seed)
    tested = time.perf_counter()
    record["accuracy"] = test_accuracy(models, inputs, config.align.device)
    if row.method == "direct":  # the vector as fine-tuned (lambda = 1): on the same rung, the source's own accuracy
        at_one = {t.name: inputs.vectors[row.kind][t.name].added_to_copy(inputs.target) for t in inputs.tasks}
        record["accuracy_scale1"] = test_accuracy(at_one, inputs, config.align.device)
    record["seconds"] = time.perf_counter() - started
    record["seconds_test"] = time.perf_counter() - tested  # the rest is fitting and choosing lambda (seconds_choose)
    return record


def record_head(row: Row, seed: int) -> dict[str, Any]:
    """What every row's record starts with: the code that made it, the row and the seed."""
    return {
        "code": source_digest(),
        "row": row.id,
        "label": row.label,
        **dataclasses.asdict(row),
        "needs": row.needs,
        "seed": seed,
    }


def choose_row(
    row: Row, inputs: SuiteInputs, config: BenchConfig, run: Run, seed: int
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """One row's models (by task) and its record, everything in it chosen on validation; no test data is read.

    Trained rows (aligners and few-shot FT alike) try every learning rate of
    ``config.lrs`` with the same steps and keep the one whose model scores best on the
    validation part of the pools; where the largest rate wins, or the smallest outright, the grid grows past it
    (x3 or /3, up to ``LR_GROWTH`` rates more).
    """
    train, val = split_pools(inputs, config.val_fraction, seed)
    record = record_head(row, seed)
    trained = _trained(row.method)
    grid: list[float | None] = list(config.lrs) if trained and config.lrs else [config.rate(row.method, row.control)]
    fits = [_fit(row, inputs, config, run, seed, train, val, lr, len(grid) > 1) for lr in grid]
    best = max(range(len(fits)), key=lambda i: fits[i][1])  # ties: the first (smaller) lr
    while (end := edge_won(best, [f[1] for f in fits], len(config.lrs) + LR_GROWTH)) is not None:
        lr = 3 * grid[-1] if end == "up" else grid[0] / 3  # type: ignore[operator]
        fit = _fit(row, inputs, config, run, seed, train, val, lr, True)
        grid, fits = (grid + [lr], fits + [fit]) if end == "up" else ([lr, *grid], [fit, *fits])
        best = max(range(len(fits)), key=lambda i: fits[i][1])
    models, _, fields = fits[best]
    record.update(fields)
    if len(grid) > 1:
        record["lr"], record["lr_validation"] = grid[best], {f"{lr:g}": f[1] for lr, f in zip(grid, fits)}
    elif trained:  # the rate it ran with: its own, else the one its settings table sets
        few_shot = row.method in ("finetune", "tune")
        record["lr"] = grid[0] if grid[0] is not None else (config.fewshot_ft if few_shot else config.align).lr
    return models, record


def edge_won(best: int, scores: list[float], most: int) -> str | None:
    """Which end of a learning-rate grid its choice sits on, so the grid grows past it ("up": the largest rate;
    "down": the smallest, which must beat its neighbour outright since ties go to the smaller rate); None: an inner
    choice, one rate, or the grid already ``most`` long."""
    if len(scores) < 2 or len(scores) >= most:
        return None
    if best == len(scores) - 1:
        return "up"
    return "down" if best == 0 and scores[0] > scores[1] else None


def _trained(method: str) -> bool:
    """Whether a row of ``method`` trains with a learning rate (few-shot FT, transfer-then-tune, a trained aligner)."""
    return method in ("finetune", "tune") or issubclass(STRATEGIES.get(method, Strategy), TrainedStrategy)


def _fit(
    row: Row,
    inputs: SuiteInputs,
    config: BenchConfig,
    run: Run,
    seed: int,
    train,
    val,
    lr: float | None,
    own_folder: bool,
) -> tuple[dict[str, nn.Module], float, dict[str, Any]]:
    """One candidate of a row: each task's model (one shared in joint mode), mean validation accuracy, what to record.

    ``per-task`` mode carries each task's vector alone (its own U's and its own lambda),
    as separate modules that never interfere; ``joint`` carries their sum.
    """
    device = config.align.device
    folder = f"rows/{row.id}-seed{seed}" + (f"-lr{lr:g}" if own_folder else "")
    row_run = Run(run.file(folder), resume=True)  # resumes a row cut off mid-training
    tasks = [t.name for t in inputs.tasks]
    fields: dict[str, Any]
    if row.method == "target":
        scores = pool_accuracy(inputs.target, val, device) if val else {}
        fields = {"scale": None, **({"validation_score": {t: scores[t] for t in tasks}} if val else {})}
        return dict.fromkeys(tasks, inputs.target), scores.get("mean", math.nan), fields
    fields = {}
    per_task = config.mode == "per-task"  # each task its own model; per-task-summed ends in one, as joint does
    ft = config.fewshot_ft.replace(seed=seed, device=device, **({"lr": lr} if lr is not None else {}))
    carrying = transfer_settings(config.transfer, seed=seed, device=device)
    if row.method == "tune":
        start = "identity" if row.init == "direct" else row.init  # direct: the vector as it is
        carried = start_from(start, row_vectors(row, inputs, seed), inputs.source, inputs.target, train, carrying)
        models, fields, updates = transfer_then_tune(inputs.target, carried, train, val, ft, config.scales, row_run)
        fields.update(chosen_steps(updates))
        fields["validation_score"] = {t: pool_accuracy(models[t], {t: val[t]}, device)[t] for t in tasks}
        return models, sum(fields["validation_score"].values()) / len(tasks), fields
    if row.method == "finetune":  # per task in per-task mode; else multi-task, one model (the paper's "w/ FT")
        scored_at = config.scales if config.step_at_best_scale and ft.select_every else ()
        vectors = finetune_updates(inputs.target, train, val, ft, row_run, per_task, scored_at)
        fields.update(chosen_steps(vectors))
    else:
        vectors = row_vectors(row, inputs, seed)
        if config.mode == "joint" and config.reference_lora_sum and row.kind == "lora" and not row.control:
            vectors = {"joint": reference_lora_sum([vectors[t] for t in tasks])}  # the code's bug, on request
        elif config.mode == "joint":
            vectors = {"joint": TaskVector.sum(list(vectors.values()))}
    if row.method == "oracle":
        planted = inputs.planted
        if planted is None:  # rows() adds the oracle row only for a planted target
            raise UsageError("the oracle row needs a planted target: it carries the vector by the planted U*")
        vectors = {k: rotate(v, planted) for k, v in vectors.items()}
    elif row.method in TRANSFERS:
        # the training parts only: lambda is chosen on val; joint rows were summed above
        done = carry(row.method, vectors, inputs.source, inputs.target, train, carrying)
        if (
            inputs.planted is not None
        ):  # two-sided maps (learnt["in/<site>"], learnt["out/<site>"]) against the planted U*
            for d in done.values():
                sides = [
                    {k.split("/", 1)[1]: u for k, u in d.learnt.items() if k.startswith(f"{side}/")}
                    for side in ("in", "out")
                ]
                if sides[0].keys() & inputs.planted.keys():
                    d.diagnostics["recovery_error"] = sum(recovery_error(maps, inputs.planted) for maps in sides) / 2
        fields["diagnostics"] = _mean_diagnostics([d.diagnostics for d in done.values()])
        fields["transfer"] = {o.name: carrying.options[o.name] for o in TRANSFERS[row.method].options}
        vectors = {k: d.vector for k, d in done.items()}
    elif row.method not in ("direct", "finetune"):
        aligning = config.align.replace(method=row.method, init=row.init, tie=row.tie, seed=seed, mode=config.mode)
        aligning = aligning.replace(lr=lr) if lr is not None else aligning
        aligning = aligning.replace(**config.anchor) if row.anchored else aligning
        vectors = start_from(row.init, vectors, inputs.source, inputs.target, train, carrying)
        if config.mode != "joint":  # the joint budget, shared out: each task's U's get its share of the steps
            aligning = task_share(aligning, len(tasks))
        validation = val if aligning.select_every else None  # the step is chosen there too
        summed = config.mode == "per-task-summed"  # one lambda for the summed model: no task's step sees it
        scored_at = config.scales if config.step_at_best_scale and validation and not summed else ()
        problem = AlignProblem(inputs.target, vectors, train, inputs.source, validation, scored_at)
        alignment = align(problem, aligning, row_run)
        if aligning.select_every:
            fields["chosen_step"] = {s: v["chosen_step"] for s, v in alignment.meta["selection"].items()}
        if row_run.writes:
            alignment.save(row_run.file("alignment.safetensors"))
        reports = [alignment.meta["diagnostics"][scope] for scope in alignment.scopes]
        if inputs.planted is not None:
            for report, scope in zip(reports, alignment.scopes):
                report["recovery_error"] = recovery_error(alignment.matrices(scope), inputs.planted)
        fields["diagnostics"] = _mean_diagnostics(reports)
        vectors = {
            k: alignment.apply(v.select(alignment.sites), task=None if k == "joint" else k) for k, v in vectors.items()
        }
    if config.mode == "per-task-summed" and "joint" not in vectors:  # one model: W + sum_i U_i^T dW_i U_i
        vectors = {"joint": TaskVector.sum([vectors[t] for t in tasks])}
    choosing = time.perf_counter()
    if not per_task:
        chosen = _scaled(inputs.target, vectors["joint"], val, config.scales, device)
        fields.update(_chosen_fields(chosen))
        fields["seconds_choose"] = time.perf_counter() - choosing
        return dict.fromkeys(tasks, chosen.model), chosen.validation.get(chosen.scale, math.nan), fields
    each = {t: _scaled(inputs.target, vectors[t], {t: val[t]} if val else {}, config.scales, device) for t in tasks}
    if val:
        fields["validation"] = {t: {str(k): v for k, v in c.validation.items()} for t, c in each.items()}
        fields["validation_score"] = {t: c.validation[c.scale] for t, c in each.items()}
    fields["scale"] = {t: c.scale for t, c in each.items()}
    fields["seconds_choose"] = time.perf_counter() - choosing
    score = sum(c.validation.get(c.scale, math.nan) for c in each.values()) / len(tasks)
    return {t: c.model for t, c in each.items()}, score, fields


def _scaled(target: nn.Module, vector: TaskVector, val: dict[str, FewShotTask], scales, device: str) -> Scaled:
    """The target carrying ``vector`` at the lambda chosen on ``val``; without validation data the grid's only lambda
    (fixed, as the paper's text fixes it at 1), no image read."""
    if val:
        return direct_addition(target, vector, val, scales, device)
    if len(scales) != 1:
        raise UsageError("no validation data to choose lambda on: give one --scales value or a --val-fraction")
    return Scaled(vector.added_to_copy(target, scales[0]), scales[0], {})


def _chosen_fields(chosen: Scaled) -> dict[str, Any]:
    """What a row records of its lambda: the lambda, and each candidate's validation score where it was chosen."""
    fields: dict[str, Any] = {"scale": chosen.scale}
    if chosen.validation:
        fields["validation"] = {str(k): v for k, v in chosen.validation.items()}
    return fields


def relatedness(inputs: SuiteInputs, seed: int) -> list[dict[str, Any]] | None:
    """How related the suite's source and target are: CKA and Procrustes residual at every depth of the image tower,
    each beside its shuffled control, on the suite's relate images (None for a suite without them, as paper)."""
    if inputs.relate_images is None:
        return None
    return [r.to_dict() for r in relate(inputs.source, inputs.target, inputs.relate_images, seed=seed)]
