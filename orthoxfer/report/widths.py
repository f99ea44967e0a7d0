"""Studies of one ladder at several model widths -> one report: widths.json, widths.md and gain_vs_width.png.

Does the vector start to carry as the models grow? Each study folder holds one width
(``orthoxfer study --width W`` records it as ``meta.width``). This reads their
study.json files and sets side by side, per rung and method, the paired transfer gain
over the method's control that each study computed (:func:`orthoxfer.report.study.paired`:
mean and 95% interval over its seeds), and checks each width's baselines against the
paper's regime on its rung. Nothing is recomputed from rows: a width's numbers are its
study's, so the report cannot disagree with them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orthoxfer.artifacts import write_json, write_text
from orthoxfer.errors import UsageError
from orthoxfer.experiments.study import PAPER_RUNG
from orthoxfer.report.plots import pyplot, save_figure
from orthoxfer.report.statistics import paired
from orthoxfer.report.study import points
from orthoxfer.terminal import Grid

TOLERANCE = 1e-9  # 0.30 - 0.20 is 0.0999...: a difference at the bound passes


@dataclass(frozen=True)
class Check:
    """One of the regime's checks: the paired difference ``minuend - subtrahend`` against a bound, on the paper's rung.

    The operands are the paper's rung's baselines (``target``, ``finetune``, ``direct``) or ``ceiling`` (the
    source's own fine-tuned accuracy, measured on the ``same`` rung).
    """

    name: str
    minuend: str
    subtrahend: str
    passes: Callable[[float], bool]


REGIME = (
    Check("FT - target >= 10", "finetune", "target", lambda d: d >= 0.10 - TOLERANCE),
    Check("|direct - target| <= 1.5", "direct", "target", lambda d: abs(d) <= 0.015 + TOLERANCE),
    Check("ceiling - FT >= 10", "ceiling", "finetune", lambda d: d >= 0.10 - TOLERANCE),
)


def load_studies(folders: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Each folder's study.json, by width; a UsageError when one has none or no width, two share a width, or their
    tasks differ (gains on other tasks are not one trend)."""
    studies = []
    for folder in folders:
        path = folder / "study.json"
        if not path.is_file():
            raise UsageError(f"no study.json in {folder}: make one with `orthoxfer study --width W --out {folder}`")
        try:
            study = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not a study summary: {exc}") from None
        if not isinstance(study, dict) or not isinstance(study.get("meta"), dict) or not study.get("rungs"):
            raise UsageError(
                f"{path} is not a study summary (no meta or rungs): give the folder `orthoxfer study` wrote"
            )
        if "tasks" not in study["meta"]:
            raise UsageError(f"{path} records no tasks: rewrite it with its `orthoxfer study` command and --resume")
        if study.get("meta", {}).get("width") is None:
            raise UsageError(
                f"{path} records no width (made before `study --width`): rewrite it with its `orthoxfer study` "
                "command and --resume"
            )
        studies.append((folder, study))
    seen: dict[int, Path] = {}
    for folder, study in studies:
        width = study["meta"]["width"]
        if width in seen:
            raise UsageError(f"{seen[width]} and {folder} are both width {width}: give one study folder per width")
        seen[width] = folder
    first_folder, first = studies[0]
    for folder, study in studies[1:]:
        if study["meta"]["tasks"] != first["meta"]["tasks"]:
            raise UsageError(
                f"{folder} ran tasks {', '.join(study['meta']['tasks'])} and {first_folder} "
                f"{', '.join(first['meta']['tasks'])}: the widths must share their tasks"
            )
    return sorted(studies, key=lambda fs: fs[1]["meta"]["width"])


def valid_control(method: dict[str, Any], controls: list[str]) -> str | None:
    """The control a method's gain is read against: the study's first (its plot's) where the method has it, else
    the method's first (a control not valid for a method is not run beside it); None without any."""
    return next((c for c in controls if c in method["controls"]), next(iter(method["controls"]), None))


def regime(study: dict[str, Any]) -> list[dict[str, Any]]:
    """The regime's checks on one study: each difference paired by seed, and whether it passes (None, with what is
    missing, where the study lacks an operand: the paper's rung, or the ceiling, which a study measures on its
    ``same`` rung or, without one, on the source directly)."""
    rung = next((r for r in study["rungs"] if r["rung"] == PAPER_RUNG), None)
    values = {**(rung["baselines"] if rung else {}), "ceiling": study.get("ceiling")}
    checks: list[dict[str, Any]] = []
    for check in REGIME:
        a, b = values.get(check.minuend), values.get(check.subtrahend)
        if a is None or b is None:
            lacking = [n for n, v in ((check.minuend, a), (check.subtrahend, b)) if v is None]
            missing = (
                f"the {PAPER_RUNG} rung"
                if rung is None
                else " and ".join(
                    "the ceiling (the same rung, or the source measured directly)"
                    if n == "ceiling"
                    else f"{n} on {PAPER_RUNG}"
                    for n in lacking
                )
            )
            checks.append({"check": check.name, "difference": None, "pass": None, "missing": missing})
            continue
        difference = paired(a["per_seed"], b["per_seed"])
        checks.append({"check": check.name, "difference": difference, "pass": check.passes(difference["mean"])})
    return checks


def summarise_widths(studies: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Everything widths.json holds: per rung, method and width the gain over the valid control (with the control's
    name and the method's accuracy), and per width the regime's checks."""
    rungs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for _, study in studies:
        for r in study["rungs"]:
            for name, m in r["methods"].items():
                if (control := valid_control(m, study["meta"]["controls"])) is None:
                    continue
                rungs.setdefault(r["rung"], {}).setdefault(name, []).append(
                    {
                        "width": study["meta"]["width"],
                        "control": control,
                        "accuracy": m["accuracy"],
                        "gain": m["controls"][control]["gain"],
                    }
                )
    return {
        "meta": {
            "title": "orthoxfer study across widths: transfer gain over each method's control",
            "widths": [s["meta"]["width"] for _, s in studies],
            "folders": [str(f) for f, _ in studies],
            "seeds": [s["meta"]["seeds"] for _, s in studies],
            "tasks": studies[0][1]["meta"]["tasks"],
        },
        "rungs": rungs,
        "regime": [{"width": s["meta"]["width"], "checks": regime(s)} for _, s in studies],
    }


def controls(summary: dict[str, Any], rung: str) -> list[str]:
    """The controls a rung's gains are read against, in order of first use."""
    return list(dict.fromkeys(e["control"] for entries in summary["rungs"][rung].values() for e in entries))


def gain_table(summary: dict[str, Any], rung: str) -> tuple[list[str], list[Sequence[str]]]:
    """One rung's heads and rows: the method, its control where the rung has more than one, and the gain ± 95% at
    each width (``-`` where that width did not run it)."""
    widths = summary["meta"]["widths"]
    several = len(controls(summary, rung)) > 1
    rows: list[Sequence[str]] = []
    for method, entries in summary["rungs"][rung].items():
        at = {e["width"]: e for e in entries}
        control = [", ".join(dict.fromkeys(e["control"] for e in entries))] if several else []
        rows.append([method, *control, *(points(at[w]["gain"], sign=True) if w in at else "-" for w in widths)])
    return ["method", *(["control"] if several else []), *(f"width {w}" for w in widths)], rows


def gain_title(summary: dict[str, Any], rung: str) -> str:
    used = controls(summary, rung)
    return f"{rung}: gain over the {used[0] + ' ' if len(used) == 1 else ''}control, points"


def regime_table(summary: dict[str, Any]) -> tuple[list[str], list[Sequence[str]]]:
    """The regime's checks: per width, each check's paired difference ± 95% and pass, FAIL or n/a (not measured)."""
    rows: list[Sequence[str]] = []
    for entry in summary["regime"]:
        cells = [
            "n/a" if c["pass"] is None else f"{points(c['difference'], sign=True)} {'pass' if c['pass'] else 'FAIL'}"
            for c in entry["checks"]
        ]
        rows.append([str(entry["width"]), *cells])
    return ["width", *(check.name for check in REGIME)], rows


def grids(summary: dict[str, Any]) -> list[Grid]:
    """What the command prints: a table per rung, then the regime's checks (each folds to the terminal's width)."""
    out = [
        Grid(gain_title(summary, rung), *gain_table(summary, rung), keys=1 + (len(controls(summary, rung)) > 1))
        for rung in summary["rungs"]
    ]
    return [*out, Grid(f"regime checks on {PAPER_RUNG} (points)", *regime_table(summary))]


def _markdown_table(heads: list[str], rows: list[Sequence[str]]) -> list[str]:
    """A markdown table; a ``|`` inside a cell (``|direct - target|``) escaped so that it does not split the cell."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(heads), "|" + "---|" * len(heads), *(line(r) for r in rows)]


def markdown(summary: dict[str, Any]) -> str:
    """widths.md: a gain table per rung, the regime's checks, and where each width's numbers came from."""
    meta = summary["meta"]
    lines = [f"# {meta['title']}", ""]
    for rung in summary["rungs"]:
        lines += [f"## {gain_title(summary, rung)}", "", *_markdown_table(*gain_table(summary, rung)), ""]
    lines += [f"## The regime's checks on `{PAPER_RUNG}`", "", *_markdown_table(*regime_table(summary)), ""]
    missing = {c["missing"] for e in summary["regime"] for c in e["checks"] if c["pass"] is None}
    sources = "; ".join(
        f"width {w}: {f} (seeds {len(s)})" for w, f, s in zip(meta["widths"], meta["folders"], meta["seeds"])
    )
    lines += [
        f"Tasks {', '.join(meta['tasks'])}. A transfer gain is the study's own: per seed the real vector's row minus "
        "the same method's row on its control vector (the study's first control where valid for the method), mean "
        "± 95% interval (Student t) over seeds, in points of top-1 %. A check's value is the paired difference it "
        "names, by seed, on the paper's rung: FT is few-shot FT, target is target only, direct is direct addition, "
        "the ceiling the source's own fine-tuned accuracy (its vectors at lambda = 1 on the source: the same rung's "
        "direct addition, or measured directly where a study runs no same rung)."
        + (f" n/a: not measured, the study lacks {' or '.join(sorted(missing))}." if missing else ""),
        "",
        f"Studies: {sources}.",
        "",
    ]
    return "\n".join(lines)


def plot_widths(summary: dict[str, Any], path: Path) -> None:
    """Transfer gain against width, one panel per rung, one marker series per method with 95% error bars."""
    plt = pyplot()
    rungs = list(summary["rungs"])
    widths = summary["meta"]["widths"]
    panels = max(len(rungs), 1)
    fig, axes = plt.subplots(
        1, panels, figsize=(4.5 * panels + 2, 4.5), sharey=True, squeeze=False, layout="constrained"
    )
    markers = "osD^vP*Xh<>"
    methods = list(dict.fromkeys(m for rung in rungs for m in summary["rungs"][rung]))
    handles: dict[str, Any] = {}
    for ax, rung in zip(axes[0], rungs):
        for i, method in enumerate(methods):
            entries = summary["rungs"][rung].get(method)
            if not entries:
                continue
            nudge = 2 ** (0.02 * (i - (len(methods) - 1) / 2))  # methods side by side at one width (log axis)
            handles[method] = ax.errorbar(
                [e["width"] * nudge for e in entries],
                [100 * e["gain"]["mean"] for e in entries],
                yerr=[100 * (e["gain"]["ci95"] or 0.0) for e in entries],
                fmt=markers[i % len(markers)] + "-",
                lw=0.8,
                capsize=3,
                label=method,
            )
        ax.axhline(0.0, color="gray", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.minorticks_off()
        ax.set(title=rung, xlabel="image-tower width")
    axes[0][0].set_ylabel("transfer gain over the control (points)")
    if handles:
        fig.legend(list(handles.values()), list(handles), fontsize=7, loc="outside right center")
    save_figure(fig, path, dpi=120)


def write_widths(out: Path, summary: dict[str, Any]) -> list[Path]:
    """widths.json, widths.md and gain_vs_width.png under ``out``, each written atomically."""
    files = [out / "widths.json", out / "widths.md", out / "gain_vs_width.png"]
    write_json(files[0], summary)
    write_text(files[1], markdown(summary))
    plot_widths(summary, files[2])
    return files
