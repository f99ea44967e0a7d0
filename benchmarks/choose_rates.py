"""Each trained method's learning rate, chosen once on validation from the selection runs, for every seed after.

The selection runs are bench runs on seed 0, one per rung, whose trained rows tried a
grid of rates (``--lrs``; the grid grows past an edge that wins) and recorded each rate's
mean validation accuracy (``lr_validation``; no test data enters it). A user does not know
which rung their pair is on, so one rate per method serves every rung: the rate with the
best validation mean over the rungs, among the rates every rung tried (ties: the
smaller). Writes ``--out`` (JSON) and prints the ``[bench.rates]`` table for the study's
config.

    python benchmarks/choose_rates.py benchmarks/results/study-v2/select-lr \\
        benchmarks/results/study-v2/select-ft --out benchmarks/results/study-v2/select-rates.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from orthoxfer.artifacts import write_json

RUNGS = ("same", "release", "seed", "data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Selection folders, each with one bench run per rung.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/study-v2/select-rates.json"))
    args = parser.parse_args()
    tried: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)  # method -> rung -> rate -> validation
    for folder in args.runs:
        for rung in RUNGS:
            for path in sorted((folder / rung / "rows").glob("*-seed0.json")):
                record = json.loads(path.read_text())
                plain = not record["control"] and not record.get("anchored") and record["kind"] in ("", "embed")
                plain = (
                    plain and record.get("init", "identity") in ("", "identity") and record.get("tie") in ("", "site")
                )
                if plain and record.get("lr_validation"):  # the method's own row: not a control's, nor a variant's
                    tried[record["method"]].setdefault(rung, {}).update(record["lr_validation"])
    chosen, means = {}, {}
    for method, by_rung in tried.items():
        if set(by_rung) != set(RUNGS):
            raise SystemExit(f"{method}: selection rows for {sorted(by_rung)} only; every rung ({', '.join(RUNGS)})")
        common = set.intersection(*(set(r) for r in by_rung.values()))
        means[method] = {r: sum(by_rung[g][r] for g in RUNGS) / len(RUNGS) for r in sorted(common, key=float)}
        chosen[method] = float(max(means[method], key=lambda r: (means[method][r], -float(r))))
    write_json(
        args.out, {"chosen": chosen, "validation_mean": means, "tried": tried, "runs": [str(p) for p in args.runs]}
    )
    print("[bench.rates]")
    for method, rate in chosen.items():
        print(f"{method} = {rate:g}  # validation mean over rungs: {100 * means[method][f'{rate:g}']:.1f}")


if __name__ == "__main__":
    main()
