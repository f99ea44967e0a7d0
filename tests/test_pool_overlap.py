"""benchmarks/pool_overlap.py pairs a study with its --disjoint-pools twin by (rung, row, seed) (synthetic rows)."""

import json

import pytest
from scripts import benchmark_script


def store(folder, rung, row, seed, accuracy):
    path = folder / rung / "rows" / f"{row}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"row": row, "seed": seed, "accuracy": {"mean": accuracy}}))


def test_rows_are_paired_by_rung_row_and_seed_and_only_where_both_hold_them(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, (x, y) in enumerate([(0.5, 0.45), (0.6, 0.52), (0.55, 0.5)], start=1):
        store(a, "data", "embed_penalty", seed, x)
        store(b, "data", "embed_penalty", seed, y)
    store(a, "data", "embed_cayley", 1, 0.4)  # no twin: left out
    store(b, "release", "embed_penalty", 1, 0.7)  # no twin either
    result = benchmark_script("pool_overlap").compare(a, b)
    (entry,) = result["rows"]
    assert (entry["rung"], entry["row"], entry["seeds"]) == ("data", "embed_penalty", [1, 2, 3])
    assert entry["difference"]["mean"] == pytest.approx(-0.06)  # disjoint minus overlapping
    assert entry["difference"]["p"] is not None and entry["overlapping"]["mean"] == pytest.approx(0.55)
    assert "| data | embed_penalty | 3 | 55.0 ± " in benchmark_script("pool_overlap").markdown(result)
