"""README's figure: the study's finding in one picture, drawn from the committed study summary.

Two panels over the ladder of relatedness, from the paper's rung (two independently
pre-trained models) to the source itself. Left, what each rung allows: target only,
few-shot FT, direct addition, and the ceiling (the source's own fine-tuned accuracy).
Right, each method's transfer gain over its spectrum control (the same method on the
vector's singular values in random directions), mean and 95% interval over seeds: the
part of a method's accuracy that the vector itself carries. The numbers are those of
``study.json``, which ``orthoxfer study`` regenerates from the rows stored beside it, so
the picture never says more than the tables do.

    python benchmarks/study_figure.py                      # writes docs/study-finding.png
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


def draw(study: dict, out: Path) -> None:
    plt = pyplot()
    rungs = {r["rung"]: r for r in study["rungs"]}
    names = [n for n in ORDER if n in rungs]
    methods = study["meta"]["methods"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.6]})
    x = range(len(names))

    width = 0.8 / len(BASELINES)
    for k, (key, label) in enumerate(BASELINES):
        cells = [rungs[n]["baselines"][key] for n in names]
        left.bar(
            [i + (k - 1) * width for i in x],
            [100 * c["mean"] for c in cells],
            width,
            yerr=[100 * c["ci95"] for c in cells],
            label=label,
            capsize=2,
        )
    left.axhline(100 * study["ceiling"]["mean"], color="k", ls="--", lw=1, label="ceiling (source fine-tuned)")
    left.set(xticks=list(x), ylabel="top-1 %, mean of 4 tasks", title="What each rung allows")
    left.set_xticklabels([LABELS[n] for n in names], fontsize=8)
    left.legend(fontsize=8, loc="upper left")

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
    right.legend(fontsize=7, ncol=2, loc="upper left")
    seeds = len(study["ceiling"]["per_seed"])
    fig.suptitle(
        f"orthoxfer study, shipped mini models, {seeds} seeds: on the paper's rung the vector carries almost "
        "nothing;\nit carries where the models share a training history",
        fontsize=10,
        y=1.03,
    )
    save_figure(fig, out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=ROOT / "benchmarks/results/study/study.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/study-finding.png")
    args = parser.parse_args()
    draw(json.loads(args.study.read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
