"""README's figure: the study's finding in one picture, drawn from a study summary (``study.json``).

Two panels over the ladder of relatedness, from the paper's rung (two independently
pre-trained models) to the source itself. Left, what each rung allows: target only,
few-shot FT, direct addition and the ceiling (the source's own fine-tuned accuracy), and
what ``auto`` chose on validation where the study has that row. Right, the transfer gain
of the rows a user would pick from (the anchored aligners, the closed form, the data-free
transfers, transfer-then-tune) over their spectrum control (the same row on the
vector's singular values in random directions), mean and 95% interval over seeds: the
part of a row's accuracy that the vector itself carries. The numbers are those of
``study.json``, which ``orthoxfer study --summarise`` makes from the stored rows, and the
title states no finding: the picture never says more than the tables do.

    python benchmarks/study_figure.py --study benchmarks/results/study-v2/study.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orthoxfer.report.plots import pyplot, save_figure

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("data", "seed", "release", "same")  # least to most related, as the ladder climbs
LABELS = {
    "data": "data\n(independent,\nthe paper's)",
    "seed": "seed\n(A's corpus,\nnew seed)",
    "release": "release\n(A trained on)",
    "same": "same\n(the source)",
}
BASELINES = (("target", "target only"), ("finetune", "few-shot FT"), ("direct", "direct addition"))
AUTO = "auto (chosen on validation)"
# the rows of the right panel, each where the study has it on every rung (a study before anchoring: the plain names)
ROWS = (
    "penalty (anchored)",
    "riemannian (anchored)",
    "cayley (anchored)",
    "penalty",
    "riemannian",
    "cayley",
    "procrustes",
    "transfusion",
    "theseus",
    "direct addition then few-shot FT",
)


def shown_rows(rungs: dict, names: list[str]) -> list[str]:
    """:data:`ROWS` that every rung has with a spectrum control; a strategy's plain row only where its anchored row
    is absent (one bar per strategy)."""
    have = [r for r in ROWS if all("spectrum" in rungs[n]["methods"].get(r, {}).get("controls", {}) for n in names)]
    return [r for r in have if f"{r} (anchored)" not in have]


def draw(study: dict, out: Path) -> None:
    plt = pyplot()
    rungs = {r["rung"]: r for r in study["rungs"]}
    names = [n for n in ORDER if n in rungs]
    methods = shown_rows(rungs, names)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.6]})
    x = range(len(names))

    bars = [(lambda r, key=key: r["baselines"][key], label) for key, label in BASELINES]
    if all(AUTO in rungs[n]["methods"] for n in names):
        bars.append((lambda r: r["methods"][AUTO]["accuracy"], "auto (chosen on validation)"))
    width = 0.8 / len(bars)
    for k, (cell, label) in enumerate(bars):
        cells = [cell(rungs[n]) for n in names]
        left.bar(
            [i + (k - (len(bars) - 1) / 2) * width for i in x],
            [100 * c["mean"] for c in cells],
            width,
            yerr=[100 * c["ci95"] for c in cells],
            label=label,
            capsize=2,
        )
    left.axhline(100 * study["ceiling"]["mean"], color="k", ls="--", lw=1, label="ceiling (source fine-tuned)")
    left.set(xticks=list(x), ylabel="top-1 %, mean of 4 tasks", title="What each rung allows")
    left.set_xticklabels([LABELS[n] for n in names], fontsize=8)
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)

    width = 0.84 / len(methods)
    for k, method in enumerate(methods):
        gains = [rungs[n]["methods"][method]["controls"]["spectrum"]["gain"] for n in names]
        right.bar(
            [i + (k - (len(methods) - 1) / 2) * width for i in x],
            [100 * g["mean"] for g in gains],
            width,
            yerr=[100 * g["ci95"] for g in gains],
            label=method,
            capsize=1.5,
        )
    right.axhline(0, color="k", lw=0.8)
    right.set(
        xticks=list(x),
        ylabel="transfer gain, points (95% interval)",
        title="What the vector itself carries: gain over the spectrum control",
    )
    right.set_xticklabels([LABELS[n] for n in names], fontsize=8)
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    seeds = len(study["ceiling"]["per_seed"])
    fig.suptitle(
        f"orthoxfer study: the shipped mini models (width {study['meta'].get('width') or 128}), "
        f"{len(study['meta']['tasks'])} tasks, {seeds} seeds; test accuracy, choices made on validation",
        fontsize=10,
    )
    save_figure(fig, out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, required=True, help="a study.json (orthoxfer study --summarise)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/study-finding.png")
    args = parser.parse_args()
    draw(json.loads(args.study.read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
