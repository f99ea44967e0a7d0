"""Each trained method's learning rate on each rung, chosen once on validation from the selection runs.

The selection runs are bench runs on seed 0, one per rung, whose trained rows tried a
grid of rates (``--lrs``; the grid grows past an edge that wins) and recorded each rate's
mean validation accuracy (``lr_validation``; no test data enters it). A rate chosen on a
pair's own validation data is what a user with that pair would choose, and the best rate
differs along the ladder, so each rung gets its own: the rate with the best validation
accuracy there (ties: the smaller). A control row's rate is chosen the same way on its own
rows (``"<method>/<control>"``): a rate that suits the real vector may not suit its control.
A choice at an edge of its grid (the largest rate, or the smallest winning outright) is
listed under ``at_an_edge``: the best rate may lie past it. Writes ``--out`` (JSON) and prints the
``[study.rates.<rung>]`` tables for the study's config (transfer-then-tune takes few-shot
FT's rate).

    python benchmarks/choose_rates.py benchmarks/results/study-v2/select-lr \
        benchmarks/results/study-v2/select-low --out benchmarks/results/study-v2/select-rates.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from orthoxfer.artifacts import write_json, write_text
from orthoxfer.experiments.bench import edge_won

RUNGS = ("same", "release", "seed", "data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Selection folders, each with one bench run per rung.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/study-v2/select-rates.json"))
    parser.add_argument("--config-out", type=Path, help="Also write the rates as a config's [study.rates] tables.")
    args = parser.parse_args()
    tried: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)  # method -> rung -> rate -> validation
    codes: dict[str, dict[str, set[str]]] = defaultdict(dict)  # the code versions its rows were made by
    for folder in args.runs:
        for rung in RUNGS:
            for path in sorted((folder / rung / "rows").glob("*-seed0.json")):
                record = json.loads(path.read_text())
                plain = not record.get("anchored") and record["kind"] in ("", "embed")
                plain = (
                    plain and record.get("init", "identity") in ("", "identity") and record.get("tie") in ("", "site")
                )
                if plain and record.get("lr_validation"):  # the method's own row or its control's, not a variant's
                    key = record["method"] + (f"/{record['control']}" if record["control"] else "")
                    tried[key].setdefault(rung, {}).update(record["lr_validation"])
                    codes[key].setdefault(rung, set()).add(record["code"])
    chosen: dict[str, dict[str, float]] = {}
    edges: list[str] = []
    for method, by_rung in tried.items():
        for rung, scores in by_rung.items():
            best = max(scores, key=lambda r: (scores[r], -float(r)))
            chosen.setdefault(rung, {})[method] = float(best)
            rates = sorted(scores, key=float)
            if edge_won(rates.index(best), [scores[r] for r in rates], len(rates) + 1) is not None:
                edges.append(f"{rung}/{method} = {best}")  # won at an edge that did not grow: the best may lie past it
    write_json(
        args.out,
        {
            "chosen": chosen,
            "tried": tried,
            "at_an_edge": edges,
            "code": {m: {r: sorted(c) for r, c in by_rung.items()} for m, by_rung in codes.items()},
            "runs": [str(p) for p in args.runs],
        },
    )
    lines = []
    for rung in RUNGS:
        lines.append(f"[study.rates.{rung}]")
        for method, rate in sorted(chosen.get(rung, {}).items()):
            key = f'"{method}"' if "/" in method else method
            lines.append(f"{key} = {rate:g}  # validation {100 * tried[method][rung][f'{rate:g}']:.1f}")
    if edges:
        print("chosen at a grid's edge (grow the grid there):", ", ".join(edges))
    print("\n".join(lines))
    if args.config_out is not None:
        head = "# Each trained method's rate per rung, chosen on seed 0's validation by benchmarks/choose_rates.py\n"
        write_text(args.config_out, head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
