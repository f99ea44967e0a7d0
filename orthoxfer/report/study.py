"""The study's rows -> paired transfer gains per rung and method: study.json, study.md and two plots.

A gain is paired by seed: on each seed, the mean accuracy of a method's row on the
real vector minus the same method's row on the control vector (same pools, same
alignment seed), then the mean and Student-t 95% interval of those differences
(:func:`orthoxfer.report.tables.interval`). Every row is also paired with few-shot FT
(per task, with its lambda and step chosen on validation as every row's are).

Each comparison's p-value is Holm-adjusted over its rung and each rung states its power
(:mod:`orthoxfer.report.statistics`); the 95% intervals are per comparison, unadjusted: a
finding rests on ``p_holm``.

The ceiling (what a perfect transfer reaches) is the source's own fine-tuned accuracy:
the ``same`` rung's direct addition at lambda = 1 (and, labelled, at the lambda chosen
on validation); on the planted rung its ``U = U*`` row. The transferability check is
each rung's validation gain of the data-free transfers (direct addition, transfusion)
over target only: known before any training, it is what a user can measure on their pair.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orthoxfer.artifacts import write_json, write_text
from orthoxfer.experiments.auto import AUTO, is_candidate
from orthoxfer.experiments.bench import Row
from orthoxfer.report.plots import pyplot, save_figure
from orthoxfer.report.separation import separation, separation_markdown
from orthoxfer.report.statistics import detectable_gain, holm, paired, stat
from orthoxfer.report.tables import free_gains

if TYPE_CHECKING:
    from orthoxfer.experiments.study import RungResult

BASELINES = {
    "target": Row("", "target"),
    "finetune": Row("", "finetune"),
    "direct": Row("embed", "direct"),
    "oracle": Row("embed", "oracle"),
}


BASELINE_METHODS = ("target", "finetune", "direct", "oracle")
EXTRA = ("tune", "auto")  # rows that are not a method of their own: transfer-then-tune, auto


def row_name(record: dict[str, Any]) -> str:
    """A row's name in the study: its label less the vector kind and the control."""
    return record["label"].split(" [control")[0].removeprefix(f"{record.get('kind')}, ")


def summarise_rung(result: RungResult, methods: list[str], seeds: list[int]) -> dict[str, Any]:
    """One rung: its relatedness (last-block CKA as its x-value), baselines, transferability, and each row's
    accuracy, gain per control and gain over few-shot FT, with Holm-adjusted p-values and the rung's power."""
    acc = {(r["row"], r["seed"]): r["accuracy"]["mean"] for r in result.records}
    by_id = {r["row"]: r for r in result.records}

    def per_seed(row_id: str) -> list[float] | None:
        values = [acc.get((row_id, s)) for s in seeds]
        found = [v for v in values if v is not None]
        return found if len(found) == len(values) else None

    last = [layers[-1]["cka"] for layers in result.relatedness.values() if layers]
    entry: dict[str, Any] = {
        "rung": result.rung,
        "source": result.source,
        "target": result.target,
        "tasks": result.tasks,
        "controls": list(result.controls),
        "last_block_cka": stat(last) if last else None,
        "relatedness": result.relatedness,
        "seconds": result.seconds,
        "row_seconds": sum(r.get("seconds", 0.0) for r in result.records),
        "code": result.code,
        "baselines": {},
        "methods": {},
    }
    for name, row in BASELINES.items():
        if (values := per_seed(row.id)) is not None:
            entry["baselines"][name] = stat(values)
    at_one = [r["accuracy_scale1"]["mean"] for r in _records(result, "embed_direct", seeds) if "accuracy_scale1" in r]
    if at_one and len(at_one) == len(seeds):
        entry["baselines"]["direct_scale1"] = stat(at_one)
    entry["transferability"] = recorded_transferability(result, seeds)
    ft = per_seed(Row("", "finetune").id)
    family: list[dict[str, Any]] = []
    for row_id, record in by_id.items():
        if record.get("control") or record["method"] in BASELINE_METHODS or record["method"] not in (*methods, *EXTRA):
            continue
        if (real := per_seed(row_id)) is None:
            continue
        against = {}
        for control in result.controls:
            chosen = _control_chosen(result, row_id, control, seeds) if record.get("anchored") else None
            if (ctrl := chosen[0] if chosen else per_seed(f"{row_id}_control-{control}")) is not None:
                against[control] = {"accuracy": stat(ctrl), "gain": paired(real, ctrl)}
                if chosen:
                    against[control]["chosen"] = chosen[1]
                family.append(against[control]["gain"])
        m: dict[str, Any] = {"row": row_id, "accuracy": stat(real), "controls": against}
        records = _records(result, row_id, seeds)
        m["per_task"] = {  # mean over seeds: where a row's mean comes from
            t: statistics.mean(r["accuracy"][t] for r in records)
            for t in result.tasks
            if all(t in r["accuracy"] for r in records)
        }
        if steps := [v for r in records for v in r.get("chosen_step", {}).values() if v is not None]:
            # where a row chose its step on validation: how often it kept its start (step 0) and where it stopped
            m["chosen_step"] = {"at_start": sum(v == 0 for v in steps) / len(steps), "median": statistics.median(steps)}
        if ft is not None:
            m["vs_fewshot_ft"] = paired(real, ft)
            family.append(m["vs_fewshot_ft"])
        if record.get("anchored") and (plain := per_seed(row_id.removesuffix("_anchored"))) is not None:
            m["vs_unanchored"] = paired(real, plain)  # the rung's beta and the step chosen on validation, together
            family.append(m["vs_unanchored"])
            if (said := _validation_gain(result, row_id, row_id.removesuffix("_anchored"), seeds)) is not None:
                m["vs_unanchored_validation"] = said
        if record["method"] == AUTO and (best := _best_other(result, per_seed)) is not None:
            # chosen on test: how near auto comes, described (mean, interval), not a test in the family
            diffs = [a - b for a, b in zip(real, best[1])]
            m["vs_best_other"] = {"row": best[0], **stat(diffs)}
        name = record["method"] if row_id == f"embed_{record['method']}" else row_name(record)
        entry["methods"][name] = m
    holm(family)
    entry["detectable_gain"] = detectable_gain(family, len(seeds))
    return entry


def _control_chosen(
    result: RungResult, row_id: str, control: str, seeds: list[int]
) -> tuple[list[float], dict[str, Any]] | None:
    """An anchored row's control with its beta chosen as the row's was, once per rung on validation: of the control
    run anchored as the row is (the rung's beta, its step chosen) and the control run unanchored, the one with the
    better mean validation score over seeds and tasks (ties to the anchored). A beta chosen on the real vector's
    validation (1 on ``same``) would otherwise hold the control near a start that carries nothing. None unless both
    ran on every seed and scored every task on validation."""
    found = {
        which: _scored_on_validation(result, f"{name}_control-{control}", seeds)
        for which, name in (("anchored", row_id), ("unanchored", row_id.removesuffix("_anchored")))
    }
    runs = {which: records for which, records in found.items() if records is not None}
    if len(runs) < len(found):
        return None
    scores = {
        which: statistics.mean(r["validation_score"][t] for r in records for t in result.tasks)
        for which, records in runs.items()
    }
    which = "unanchored" if scores["unanchored"] > scores["anchored"] else "anchored"
    values = [statistics.mean(r["accuracy"][t] for t in result.tasks) for r in runs[which]]
    return values, {"row": which, "validation": scores}


def _validation_gain(result: RungResult, row_id: str, other: str, seeds: list[int]) -> dict[str, Any] | None:
    """What validation said of a row against another (paired by seed, mean over tasks, each at its chosen settings).
    Beside the same comparison on test it shows the choice's optimism: a step chosen on 32-88 images as the best
    of eleven checkpoints looks better on validation than it is. None unless both scored every task on every seed."""
    mine, theirs = (_scored_on_validation(result, r, seeds) for r in (row_id, other))
    if mine is None or theirs is None:
        return None
    means = [[statistics.mean(r["validation_score"][t] for t in result.tasks) for r in f] for f in (mine, theirs)]
    return stat([a - b for a, b in zip(*means)])


def _scored_on_validation(result: RungResult, row_id: str, seeds: list[int]) -> list[dict[str, Any]] | None:
    """A row's records of ``seeds``, where it ran on every one and scored every task on validation; None otherwise."""
    found = _records(result, row_id, seeds)
    if len(found) < len(seeds) or any(set(result.tasks) - set(r.get("validation_score", {})) for r in found):
        return None
    return found


def _best_other(result: RungResult, per_seed: Callable[[str], list[float] | None]) -> tuple[str, list[float]] | None:
    """Of the rows auto chooses among (:func:`~orthoxfer.experiments.auto.is_candidate`), the one with the best mean
    test accuracy, by its label: chosen on test, a yardstick for auto (which chooses on validation), not a method a
    user could run."""
    found = {
        r["row"]: (r["label"], values)
        for r in result.records
        if is_candidate(r)
        if (values := per_seed(r["row"])) is not None
    }
    return max(found.values(), key=lambda named: statistics.mean(named[1])) if found else None


def _records(result: RungResult, row_id: str, seeds: list[int]) -> list[dict[str, Any]]:
    found = {r["seed"]: r for r in result.records if r["row"] == row_id}
    return [found[s] for s in seeds if s in found]


def recorded_transferability(result: RungResult, seeds: list[int]) -> dict[str, Any] | None:
    """Per seed, each task's best validation gain of a data-free transfer (direct addition, transfusion) over target
    only, mean over tasks: the check a user runs in seconds, before any training. ``per_task`` holds each task's best
    gain per seed (in ``seeds``' order): what :mod:`orthoxfer.report.separation` reads."""
    rows = [
        r for row_id in ("none_target", "embed_direct", "embed_transfusion") for r in _records(result, row_id, seeds)
    ]
    means: list[float] = []
    per_task: dict[str, list[float]] = {}
    for s in seeds:
        gains = free_gains([r for r in rows if r["seed"] == s], result.tasks)
        if gains is None:
            return None
        means.append(statistics.mean(gains.values()))
        for t, g in gains.items():
            per_task.setdefault(t, []).append(g)
    return {**stat(means), "per_task": per_task}


def ceiling(rungs: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any] | None:
    """The source's own fine-tuned accuracy: the ``same`` rung's direct addition at lambda = 1, or where that rung was
    not run the study's own measure of it (``meta["source_ceiling"]``); None without either. Rows made before
    lambda = 1 was recorded give the validation lambda's, labelled so."""
    same = next((r for r in rungs if r["rung"] == "same"), None)
    if same is None and meta.get("source_ceiling"):
        return {
            **stat(meta["source_ceiling"]),
            "from": "the source's vectors at lambda = 1 on the source (the same rung not run)",
        }
    if same is None or "direct" not in same["baselines"]:
        return None
    if "direct_scale1" in same["baselines"]:
        return {
            **same["baselines"]["direct_scale1"],
            "from": "the same rung's direct addition at lambda = 1",
            "at_validation_lambda": same["baselines"]["direct"],
        }
    return {**same["baselines"]["direct"], "from": "the same rung's direct addition at the validation lambda"}


def summarise_study(results: list[RungResult], methods: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    """Everything study.json holds: the meta (settings, machine, time), every rung's summary, the ceiling."""
    seeds = list(meta["seeds"])
    rungs = [summarise_rung(r, methods, seeds) for r in results]
    return {
        "meta": {**meta, "seeds": seeds},
        "rungs": rungs,
        "ceiling": ceiling(rungs, meta),
        "transferability_check": separation(rungs, seeds),
    }


def points(s: dict[str, Any] | None, sign: bool = False) -> str:
    """A :func:`stat` in points: ``mean ± half-width`` (``+`` on a positive mean where ``sign``: a gain), ``-`` for none."""
    if s is None:
        return "-"
    return f"{100 * s['mean']:{'+' if sign else ''}.1f}" + (
        f" ± {100 * s['ci95']:.1f}" if s["ci95"] is not None else ""
    )


def _gain(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _p(test: dict[str, Any] | None) -> str:
    return "-" if test is None or test.get("p_holm") is None else f"{test['p_holm']:.2g}"


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1 else str(seeds)


def _cka(r: dict[str, Any]) -> str:
    return f"{r['last_block_cka']['mean']:.2f}" if r["last_block_cka"] else "-"


def markdown(study: dict[str, Any]) -> str:
    """Tables: each rung's relatedness and baselines; each method's accuracy, control accuracy and gain; anchoring
    against no anchor and auto against the best other row."""
    meta, rungs, top = study["meta"], study["rungs"], study["ceiling"]
    lines = [
        f"# {meta['title']}",
        "",
        "| rung | target | last-block CKA | transferability | target only | few-shot FT | direct addition | ceiling "
        "| detectable gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rungs:
        b = r["baselines"]
        roof = b.get("oracle") or top  # the planted rung has its own: U = U*
        lines.append(
            f"| {r['rung']} | {r['target']} | {_cka(r)} | {points(r.get('transferability'))} | "
            f"{points(b.get('target'))} | {points(b.get('finetune'))} | {points(b.get('direct'))} | {points(roof)} | "
            f"{_gain(r.get('detectable_gain'))} |"
        )
    lines += [
        "",
        "| rung | method | accuracy | vs few-shot FT | p (Holm) | control | control accuracy | transfer gain "
        "| p (Holm) | detectable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rungs:
        for method, m in r["methods"].items():
            ft = m.get("vs_fewshot_ft")
            for control, c in m["controls"].items() or [("-", None)]:
                lines.append(
                    f"| {r['rung']} | {method} | {points(m['accuracy'])} | {points(ft)} | {_p(ft)} | "
                    f"{control}{' (chosen)' if c and 'chosen' in c else ''} | "
                    f"{points(c and c['accuracy'])} | {points(c and c['gain'])} | {_p(c and c['gain'])} | "
                    f"{_gain(c and c['gain'].get('detectable'))} |"
                )
    against = _against(rungs)
    if against:  # what anchoring costs, and how near auto's choice on validation comes to the best row on test
        lines += [
            "",
            "| rung | row | against | difference | p (Holm) | on validation |",
            "|---|---|---|---|---|---|",
            *against,
        ]
    steps = [
        f"| {r['rung']} | {method} | {100 * c['at_start']:.0f}% | {c['median']:g} |"
        for r in rungs
        for method, m in r["methods"].items()
        if (c := m.get("chosen_step"))
    ]
    if steps:  # a start kept on validation shows as step 0: training only spoiled it
        lines += ["", "| rung | row | step 0 kept (tasks x seeds) | median step chosen |", "|---|---|---|---|", *steps]
    lines += [
        "",
        f"Top-1 % on the test splits of {', '.join(meta['tasks'])}, mean over seeds {_seeds(meta['seeds'])} ± 95% "
        "interval (Student t, per comparison, not adjusted); a transfer gain is paired by seed: the real vector's row minus the same method's "
        "row on the control vector; an anchored row's control (chosen) has its beta chosen once per rung on "
        "validation, as the row's was: of that control anchored as the row is and unanchored, the better over "
        "the rung's seeds and tasks. Every seed redraws the few-shot pools and reseeds alignment and controls on "
        f"the one pre-trained pair (model seed {meta['model_seed']}). The ceiling is the source's own fine-tuned "
        f"accuracy: {(study.get('ceiling') or {}).get('from', 'not measured')} (planted: its U = U* row). "
        "Transferability: the "
        "validation gain of the best data-free transfer over target only. p: paired t-test, Holm-adjusted over "
        "the rung's distinct comparisons (rows computing the same thing count once; a difference the same on every "
        "seed is not tested: -); detectable gain: the "
        "smallest paired gain the rung detects with 80% power at Holm's strictest level, from the median spread of "
        "its comparisons; detectable: the same for that transfer gain, from its own spread. " + _made(meta, rungs),
        "",
    ]
    if study.get("transferability_check"):
        lines += separation_markdown(study["transferability_check"])
    return "\n".join(lines)


def _made(meta: dict[str, Any], rungs: list[dict[str, Any]]) -> str:
    """Where the numbers come from: the run that computed the rows, or a summary of rows stored earlier."""
    if "summarised_with" not in meta:
        return f"{meta['seconds']:.0f} s on {meta['machine']['cpu']} ({meta['machine']['device']})."
    codes = sorted({code["source"] for r in rungs for code in r.get("code", [])})
    return (
        f"Summarised from stored rows ({sum(r['row_seconds'] for r in rungs):.0f} s of rows, made by code "
        f"{', '.join(codes) or 'unrecorded'}; summary by {meta['summarised_with']['source']}, which also measured "
        "the relatedness, and the ceiling where no same rung ran)."
    )


def _against(rungs: list[dict[str, Any]]) -> list[str]:
    """Table lines: each anchored row against its strategy unanchored, auto against the best other row on test."""
    lines = []
    for r in rungs:
        for method, m in r["methods"].items():
            compared = [
                (
                    "the same strategy unanchored, its last step",
                    m.get("vs_unanchored"),
                    m.get("vs_unanchored_validation"),
                )
            ]
            if (best := m.get("vs_best_other")) is not None:
                compared.append((f"the best other row on test ({best['row']})", best, None))
            lines += [
                f"| {r['rung']} | {method} | {other} | {points(d, sign=True)} | {_p(d) if 'p' in d else 'not tested'} "
                f"| {points(said, sign=True)} |"
                for other, d, said in compared
                if d is not None
            ]
    return lines


def _last_block_cka(rung: dict[str, Any]) -> float | None:
    return rung["last_block_cka"]["mean"] if rung["last_block_cka"] else None


def _transferability(rung: dict[str, Any]) -> float | None:
    return 100 * rung["transferability"]["mean"] if rung.get("transferability") else None


def plot_gains(
    study: dict[str, Any],
    path: Path,
    x: Callable[[dict[str, Any]], float | None],
    xlabel: str,
    threshold: float | None = None,
) -> None:
    """Transfer gain against a rung's x-value (``x``; rungs without one are left out), one marker series per method,
    95% error bars; ``threshold``, where given, a vertical line."""
    plt = pyplot()
    control = study["meta"]["controls"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rungs = [(v, r) for r in study["rungs"] if (v := x(r)) is not None]
    methods = list(dict.fromkeys(m for _, r in rungs for m in r["methods"]))
    markers = "osD^vP*Xh<>"
    xs = [v for v, _ in rungs]
    step = 0.01 * ((max(xs) - min(xs)) or 1.0) if xs else 0.0  # methods side by side at one rung
    for i, method in enumerate(methods):
        offset = step * (i - (len(methods) - 1) / 2)
        points = [
            (v + offset, r["methods"][method]["controls"][control]["gain"])
            for v, r in rungs
            if control in r["methods"].get(method, {}).get("controls", {})
        ]
        if points:
            ax.errorbar(
                [p for p, _ in points],
                [100 * g["mean"] for _, g in points],
                yerr=[100 * (g["ci95"] or 0.0) for _, g in points],
                fmt=markers[i % len(markers)],
                capsize=3,
                label=method,
            )
    for v, r in rungs:
        ax.annotate(r["rung"], (v, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=8)
    ax.axhline(0.0, color="gray", lw=0.8, ls="--")
    if threshold is not None:
        ax.axvline(threshold, color="gray", lw=0.8, ls=":", label="separating threshold")
    ax.set(xlabel=xlabel, ylabel=f"transfer gain vs {control} control (points)")
    if ax.get_lines() or ax.collections:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path, dpi=120)


def write_study(out: Path, study: dict[str, Any]) -> list[Path]:
    """study.json, study.md, gain_vs_cka.png and gain_vs_transferability.png under ``out``, each written atomically.

    The second plot is the first's against what a user can measure on their own pair before any training (the
    rung's mean transferability), with the separating threshold of the per-task values where there is one.
    """
    files = [out / "study.json", out / "study.md", out / "gain_vs_cka.png", out / "gain_vs_transferability.png"]
    write_json(files[0], study)
    write_text(files[1], markdown(study))
    plot_gains(study, files[2], _last_block_cka, "last-block CKA between source and target")
    separating = study.get("transferability_check")
    plot_gains(
        study,
        files[3],
        _transferability,
        "transferability: validation gain of the best data-free transfer over target only (points)",
        100 * separating["threshold"] if separating else None,
    )
    return files
