"""What the overlap of the pools with the source vector's training data is worth: a study against its disjoint twin.

The mini suite's pools are drawn from the training split the source vectors were
fine-tuned on, as the paper's are. A second study run with ``--disjoint-pools`` (pools
from a part of the split the vectors are fine-tuned without, everything else equal) gives
each of its rows a twin in the first; this pairs them by (rung, row, seed) and reports,
per row, the test accuracy with and without the overlap and the paired difference
(disjoint minus overlapping: mean, 95% interval over seeds, two-sided paired t-test),
on the rows and seeds both studies hold.

    python benchmarks/pool_overlap.py benchmarks/results/study-v2 benchmarks/results/study-v2-disjoint \\
        --out benchmarks/results/pool-overlap
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orthoxfer.artifacts import write_json, write_text
from orthoxfer.report.statistics import paired, stat
from orthoxfer.report.study import points


def rows(folder: Path) -> dict[tuple[str, str, int], float]:
    """Every stored row's mean test accuracy by (rung, row, seed)."""
    found = {}
    for path in folder.glob("*/rows/*.json"):
        record = json.loads(path.read_text())
        if "accuracy" in record:
            found[(path.parent.parent.name, record["row"], record["seed"])] = record["accuracy"]["mean"]
    return found


def compare(overlapping: Path, disjoint: Path) -> dict:
    """Per (rung, row) both studies hold on the same seeds: each side's accuracy and the paired difference."""
    a, b = rows(overlapping), rows(disjoint)
    common = sorted(set(a) & set(b))
    by_row: dict[tuple[str, str], list[int]] = {}
    for rung, row, seed in common:
        by_row.setdefault((rung, row), []).append(seed)
    entries = []
    for (rung, row), seeds in sorted(by_row.items()):
        with_overlap = [a[(rung, row, s)] for s in seeds]
        without = [b[(rung, row, s)] for s in seeds]
        entries.append(
            {
                "rung": rung,
                "row": row,
                "seeds": seeds,
                "overlapping": stat(with_overlap),
                "disjoint": stat(without),
                "difference": paired(without, with_overlap),
            }
        )
    return {"overlapping": str(overlapping), "disjoint": str(disjoint), "rows": entries}


def markdown(result: dict) -> str:
    lines = [
        "# What the pools' overlap with the source vector's training data is worth",
        "",
        "| rung | row | seeds | overlapping pools | disjoint pools | disjoint - overlapping | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in result["rows"]:
        p = e["difference"]["p"]
        lines.append(
            f"| {e['rung']} | {e['row']} | {len(e['seeds'])} | {points(e['overlapping'])} | {points(e['disjoint'])} "
            f"| {points(e['difference'], sign=True)} | {'-' if p is None else f'{p:.2g}'} |"
        )
    lines += [
        "",
        f"Top-1 % on test, mean over the seeds both studies hold ± 95% interval (Student t); the difference is "
        f"paired by seed, p from a two-sided paired t-test, not adjusted. Overlapping: {result['overlapping']}; "
        f"disjoint: {result['disjoint']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlapping", type=Path, help="A study folder (pools overlap the vectors' training data).")
    parser.add_argument("disjoint", type=Path, help="Its twin run with --disjoint-pools.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pool-overlap"))
    args = parser.parse_args()
    result = compare(args.overlapping, args.disjoint)
    if not result["rows"]:
        raise SystemExit(
            "the two folders share no (rung, row, seed): run the disjoint study on the same rows and seeds"
        )
    write_json(args.out / "pool-overlap.json", result)
    write_text(args.out / "pool-overlap.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
