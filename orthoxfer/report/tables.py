"""Benchmark rows -> one table: means over seeds with 95% intervals, transfer gains, files, plots.

With one seed the interval is left empty rather than invented; with n >= 2 it is the
Student-t interval of the mean, mean +- t_{0.975, n-1} * sd / sqrt(n).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from scipy import stats

from orthoxfer.artifacts import write_json, write_text
from orthoxfer.evaluation.transferability import DATA_FREE, READING
from orthoxfer.report.plots import pyplot, save_figure
from orthoxfer.terminal import Grid


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% interval (None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


MEASURES = {  # summary name -> diagnostics key, averaged over seeds where a row reports it
    "orth_error": "orth_error_mean",
    "norm_ratio": "norm_ratio",
    "dist_identity": "dist_identity_mean",
    "recovery_error": "recovery_error",
    "kept_fraction": "kept_fraction",
    "cos_shift": "cos_shift_mean",
    "moved": "moved_mean",
}


def summarise_rows(records: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """One entry per row: per-task and mean accuracy (mean, +-), diagnostics, time, and gains over controls."""
    by_row: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_row[r["row"]].append(r)
    out = []
    for runs in by_row.values():
        first = runs[0]
        entry: dict[str, Any] = {
            k: first.get(k, "site") for k in ("row", "label", "kind", "method", "init", "control", "tie")
        }
        entry["needs"] = first.get("needs", "-")
        entry["seeds"] = [r["seed"] for r in runs]
        entry["accuracy"] = {t: interval([r["accuracy"][t] for r in runs]) for t in [*tasks, "mean"]}
        entry["scale"] = [r["scale"] for r in runs]
        entry["seconds"] = sum(r["seconds"] for r in runs) / len(runs)
        diags = [r["diagnostics"] for r in runs if "diagnostics" in r]
        if diags:  # an alignment's measures of U, or a transfer method's own (mask kept, cosine with the base shift, indices moved)
            for name, key in MEASURES.items():
                if key in diags[0]:
                    entry[name] = sum(d[key] for d in diags) / len(diags)
            if "rank_kept" in diags[0]:
                entry["rank_kept"] = f"{diags[0]['rank_kept']}/{diags[0]['sites']}"
        out.append(entry)
    index = {(e["kind"], e["method"], e["init"], e["tie"], e["control"]): e for e in out}
    by_seed = {(r["row"], r["seed"]): r["accuracy"]["mean"] for r in records}
    for e in out:
        if e["control"] or e["method"] in ("target", "finetune", "direct", "oracle"):
            continue
        gains = {}
        for (kind, method, init, tie, control), c in index.items():
            if control and (kind, method, init, tie) == (e["kind"], e["method"], e["init"], e["tie"]):
                paired = [
                    by_seed[(e["row"], s)] - by_seed[(c["row"], s)] for s in e["seeds"] if (c["row"], s) in by_seed
                ]
                gains[control] = interval(paired)
        if gains:
            e["transfer_gain"] = gains
    return out


def free_gains(records: list[dict[str, Any]], tasks: list[str]) -> dict[str, float] | None:
    """One seed's rows -> each task's validation gain over target only of the best data-free transfer (direct
    addition, transfusion): the transferability check, read from rows a bench computes anyway. None without a
    target row and a data-free row scored on validation."""
    scored = [r for r in records if not r.get("control") and isinstance(r.get("validation_score"), dict)]
    base = next((r["validation_score"] for r in scored if r["method"] == "target"), None)
    free = [r["validation_score"] for r in scored if r["method"] in DATA_FREE]
    if base is None or not free or any(t not in base or any(t not in f for f in free) for t in tasks):
        return None
    return {t: max(f[t] for f in free) - base[t] for t in tasks}


def transferability_check(records: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any] | None:
    """The transferability check of a bench: per task, :func:`free_gains` as mean and interval over the seeds that
    have it (data-free rows read no few-shot data, so the seeds agree unless the pools' validation sets differ)."""
    seeds = sorted({r["seed"] for r in records})
    found = [g for s in seeds if (g := free_gains([r for r in records if r["seed"] == s], tasks)) is not None]
    if not found:
        return None
    per_task = {t: interval([g[t] for g in found]) for t in tasks}
    return {"per_task": per_task, "mean": interval([sum(g.values()) / len(g) for g in found])}


def transferability_line(check: dict[str, Any]) -> str:
    """One line for the table's foot: what the check says before any training, and how to read it."""
    cells = ", ".join(f"{t} {100 * m:+.1f}" for t, (m, _) in check["per_task"].items())
    return (
        f"Transferability (validation gain of the best data-free transfer over target only): {cells}; "
        f"{READING} (docs/study.md)."
    )


def _cell(value: tuple[float, float | None]) -> str:
    mean, half = value
    return f"{100 * mean:.1f}" + (f" ±{100 * half:.1f}" if half is not None else "")


def _columns(summary: list[dict[str, Any]], tasks: list[str]) -> tuple[list[str], list[list[str]]]:
    controls = sorted({c for e in summary for c in e.get("transfer_gain", {})})
    planted = any("recovery_error" in e for e in summary)
    masks, shifts = any("kept_fraction" in e for e in summary), any("cos_shift" in e for e in summary)
    perms = any("moved" in e for e in summary)
    heads = [
        "method",
        *tasks,
        "mean",
        "needs",
        "λ",
        "‖UᵀU−I‖",
        "norm ratio",
        "rank kept",
        "‖U−I‖",
        *(["‖U−U*‖"] if planted else []),
        *(["kept"] if masks else []),
        *(["|cos s|"] if shifts else []),
        *(["moved"] if perms else []),
        *[f"gain vs {c}" for c in controls],
        "s",
    ]
    rows = []
    for e in summary:
        scales = sorted({v for s in e["scale"] if s is not None for v in (s.values() if isinstance(s, dict) else [s])})
        gains = e.get("transfer_gain", {})
        rows.append(
            [
                e["label"],
                *[_cell(e["accuracy"][t]) for t in tasks],
                _cell(e["accuracy"]["mean"]),
                e.get("needs", "-"),
                ",".join(f"{s:g}" for s in scales) or "-",
                f"{e['orth_error']:.1e}" if "orth_error" in e else "-",
                f"{e['norm_ratio']:.4f}" if "norm_ratio" in e else "-",
                e.get("rank_kept", "-"),
                f"{e['dist_identity']:.3g}" if "dist_identity" in e else "-",
                *([f"{e['recovery_error']:.3g}" if "recovery_error" in e else "-"] if planted else []),
                *([f"{e['kept_fraction']:.3f}" if "kept_fraction" in e else "-"] if masks else []),
                *([f"{e['cos_shift']:.1e}" if "cos_shift" in e else "-"] if shifts else []),
                *([f"{e['moved']:.3f}" if "moved" in e else "-"] if perms else []),
                *[_cell(gains[c]) if c in gains else "-" for c in controls],
                f"{e['seconds']:.0f}",
            ]
        )
    return heads, rows


def rich_tables(summary: list[dict[str, Any]], tasks: list[str], title: str) -> list[Grid]:
    """Accuracy per task, then how each method got there; each splits its columns further where the width asks."""
    heads, rows = _columns(summary, tasks)
    split = len(tasks) + 2  # method, tasks, mean | the rest
    tables = []
    for name, cols in ((f"{title}: top-1 %", list(range(split))), ("diagnostics", [0, *range(split, len(heads))])):
        tables.append(Grid(name, [heads[i] for i in cols], [[r[i] for i in cols] for r in rows]))
    return tables


def write_results(
    out: Path,
    summary: list[dict[str, Any]],
    records: list[dict],
    tasks: list[str],
    meta: dict,
    check: dict[str, Any] | None = None,
) -> list[Path]:
    """results.json (every seed's record, the summary and the transferability ``check``), results.csv, results.md
    and the plots."""
    heads, rows = _columns(summary, tasks)
    write_json(
        out / "results.json",
        {"meta": meta, "tasks": tasks, "summary": summary, "transferability": check, "records": records},
    )
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(heads)
    writer.writerows(rows)
    write_text(out / "results.csv", buf.getvalue())
    md = [f"# {meta.get('title', 'orthoxfer bench')}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += [
        "",
        "Accuracy: top-1 % on each task's test split (mean over seeds ± 95% interval where seeds > 1);",
        "λ chosen on the validation part of the few-shot pools. "
        + json.dumps({k: meta[k] for k in ("suite", "source", "target", "seeds") if k in meta}),
        *(["", transferability_line(check)] if check else []),
    ]
    write_text(out / "results.md", "\n".join(md) + "\n")
    return [out / "results.json", out / "results.csv", out / "results.md", *plot_results(out, summary, tasks)]


def plot_results(out: Path, summary: list[dict[str, Any]], tasks: list[str]) -> list[Path]:
    plt = pyplot()
    files = [out / "accuracy.png", out / "orthogonality.png"]
    fig, ax = plt.subplots(figsize=(max(8, len(tasks) * 1.6), 0.35 * len(summary) + 2))
    grid = [[100 * e["accuracy"][t][0] for t in [*tasks, "mean"]] for e in summary]
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tasks) + 1), [*tasks, "mean"], rotation=30, ha="right")
    ax.set_yticks(range(len(summary)), [e["label"] for e in summary])
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label="top-1 %")
    ax.set_title("accuracy per task and method")
    save_figure(fig, files[0], dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4))
    for e in summary:
        metrics = out / "rows" / f"{e['row']}-seed{e['seeds'][0]}" / "metrics.jsonl"
        if e["method"] in ("target", "finetune", "direct", "procrustes") or e["control"] or not metrics.exists():
            continue
        points = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        ax.semilogy([p["step"] for p in points], [max(p["orth_error"], 1e-9) for p in points], label=e["label"])
    ax.set(xlabel="step", ylabel="max ||U^T U - I||_F", title="orthogonality error over steps")
    if ax.get_lines():  # rows without a training curve (closed forms, baselines) draw nothing
        ax.legend(fontsize=7)
    save_figure(fig, files[1], dpi=110)
    return files
