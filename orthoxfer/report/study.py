"""The study's rows -> paired transfer gains per rung and method, study.json, study.md and gain_vs_cka.png.

A gain is paired by seed: on each seed, the mean accuracy of a method's row on the
real vector minus the same method's row on the control vector (same pools, same
alignment seed), then the mean and Student-t 95% interval of those differences
(:func:`orthoxfer.report.tables.interval`). The ceiling (what a perfect transfer
reaches: the source's own fine-tuned accuracy) is the ``same`` rung's direct addition,
and on the planted rung its ``U = U*`` row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orthoxfer.artifacts import write_json, write_text
from orthoxfer.experiments.bench import Row
from orthoxfer.report.plots import pyplot, save_figure
from orthoxfer.report.tables import interval

if TYPE_CHECKING:
    from orthoxfer.experiments.study import RungResult

BASELINES = {
    "target": Row("", "target"),
    "finetune": Row("", "finetune"),
    "direct": Row("embed", "direct"),
    "oracle": Row("embed", "oracle"),
}


def stat(values: list[float]) -> dict[str, Any]:
    """Mean, 95% half-width (None for one seed) and the values it came from."""
    mean, half = interval(values)
    return {"mean": mean, "ci95": half, "per_seed": values}


def summarise_rung(result: RungResult, methods: list[str], seeds: list[int]) -> dict[str, Any]:
    """One rung: its relatedness (last-block CKA as its x-value), baselines and each method's gain per control."""
    acc = {(r["row"], r["seed"]): r["accuracy"]["mean"] for r in result.records}

    def per_seed(row: Row) -> list[float] | None:
        values = [acc.get((row.id, s)) for s in seeds]
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
        "row_seconds": sum(r["seconds"] for r in result.records),
        "baselines": {},
        "methods": {},
    }
    for name, row in BASELINES.items():
        if (values := per_seed(row)) is not None:
            entry["baselines"][name] = stat(values)
    for method in methods:
        real = per_seed(Row("embed", method))
        if real is None:
            continue
        against = {}
        for control in result.controls:
            if (ctrl := per_seed(Row("embed", method, control=control))) is not None:
                against[control] = {"accuracy": stat(ctrl), "gain": stat([r - c for r, c in zip(real, ctrl)])}
        entry["methods"][method] = {"accuracy": stat(real), "controls": against}
    return entry


def ceiling(rungs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The source's own fine-tuned accuracy: the ``same`` rung's direct addition (None when that rung was not run)."""
    same = next((r for r in rungs if r["rung"] == "same"), None)
    if same is None or "direct" not in same["baselines"]:
        return None
    return {**same["baselines"]["direct"], "from": "the same rung's direct addition (the target is the source)"}


def summarise_study(results: list[RungResult], methods: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    """Everything study.json holds: the meta (settings, machine, time), every rung's summary, the ceiling."""
    rungs = [summarise_rung(r, methods, list(range(meta["seeds"]))) for r in results]
    return {"meta": {**meta, "seeds": list(range(meta["seeds"]))}, "rungs": rungs, "ceiling": ceiling(rungs)}


def _pts(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return f"{100 * s['mean']:.1f}" + (f" ± {100 * s['ci95']:.1f}" if s["ci95"] is not None else "")


def _cka(r: dict[str, Any]) -> str:
    return f"{r['last_block_cka']['mean']:.2f}" if r["last_block_cka"] else "-"


def markdown(study: dict[str, Any]) -> str:
    """Two tables: each rung's relatedness and baselines, then each method's accuracy, control accuracy and gain."""
    meta, rungs, top = study["meta"], study["rungs"], study["ceiling"]
    lines = [
        f"# {meta['title']}",
        "",
        "| rung | target | last-block CKA | target only | few-shot FT | direct addition | ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rungs:
        b = r["baselines"]
        roof = b.get("oracle") or top  # the planted rung has its own: U = U*
        lines.append(
            f"| {r['rung']} | {r['target']} | {_cka(r)} | {_pts(b.get('target'))} | {_pts(b.get('finetune'))} | "
            f"{_pts(b.get('direct'))} | {_pts(roof)} |"
        )
    lines += [
        "",
        "| rung | last-block CKA | method | accuracy | control | control accuracy | transfer gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rungs:
        for method, m in r["methods"].items():
            for control, c in m["controls"].items():
                lines.append(
                    f"| {r['rung']} | {_cka(r)} | {method} | {_pts(m['accuracy'])} | {control} | "
                    f"{_pts(c['accuracy'])} | {_pts(c['gain'])} |"
                )
    lines += [
        "",
        f"Top-1 % on the test splits of {', '.join(meta['tasks'])}, mean over {len(meta['seeds'])} seeds ± 95% "
        "interval (Student t); a transfer gain is paired by seed: the real vector's row minus the same method's "
        "row on the control vector. Every seed redraws the few-shot pools and reseeds alignment and controls on "
        f"the one pre-trained pair (model seed {meta['model_seed']}). The ceiling is the source's own fine-tuned "
        "accuracy: the same rung's direct addition (planted: its U = U* row). "
        f"{meta['seconds']:.0f} s on {meta['machine']['cpu']} ({meta['machine']['device']}).",
        "",
    ]
    return "\n".join(lines)


def plot_gains(study: dict[str, Any], path: Path) -> None:
    """Transfer gain against the rung's last-block CKA, one marker series per method, 95% error bars."""
    plt = pyplot()
    control = study["meta"]["controls"][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rungs = [r for r in study["rungs"] if r["last_block_cka"]]
    methods = list(dict.fromkeys(m for r in rungs for m in r["methods"]))
    markers = "osD^vP*Xh<>"
    xs = [r["last_block_cka"]["mean"] for r in rungs]
    step = 0.01 * ((max(xs) - min(xs)) or 1.0) if xs else 0.0  # methods side by side at one rung
    for i, method in enumerate(methods):
        offset = step * (i - (len(methods) - 1) / 2)
        points = [
            (r["last_block_cka"]["mean"] + offset, r["methods"][method]["controls"][control]["gain"])
            for r in rungs
            if control in r["methods"].get(method, {}).get("controls", {})
        ]
        if points:
            ax.errorbar(
                [x for x, _ in points],
                [100 * g["mean"] for _, g in points],
                yerr=[100 * (g["ci95"] or 0.0) for _, g in points],
                fmt=markers[i % len(markers)],
                capsize=3,
                label=method,
            )
    for r in rungs:
        ax.annotate(
            r["rung"],
            (r["last_block_cka"]["mean"], 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(0.0, color="gray", lw=0.8, ls="--")
    ax.set(xlabel="last-block CKA between source and target", ylabel=f"transfer gain vs {control} control (points)")
    if ax.get_lines() or ax.collections:
        ax.legend(fontsize=7, loc="best")
    save_figure(fig, path, dpi=120)


def write_study(out: Path, study: dict[str, Any]) -> list[Path]:
    """study.json, study.md and gain_vs_cka.png under ``out``, each written atomically."""
    files = [out / "study.json", out / "study.md", out / "gain_vs_cka.png"]
    write_json(files[0], study)
    write_text(files[1], markdown(study))
    plot_gains(study, files[2])
    return files
