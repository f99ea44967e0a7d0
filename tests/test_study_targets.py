"""benchmarks/study_targets.py reads each target off a study summary: on the mean, on the lower bound, or missing."""

import json

import pytest
from scripts import benchmark_script


def s(mean, ci95=0.01, lower95=None):
    return {"mean": mean, "ci95": ci95, "lower95": mean - 0.008 if lower95 is None else lower95}


def seeds(*values):
    return {"mean": sum(values) / len(values), "per_seed": list(values)}


def test_targets_are_read_on_the_mean_and_the_lower_bound_and_missing_rows_are_said_missing(tmp_path, monkeypatch):
    targets = benchmark_script("study_targets")
    study = {
        "meta": {"seeds": [1, 2, 3]},
        "ceiling": seeds(0.90, 0.90, 0.91),
        "rungs": [
            {
                "rung": "same",
                "methods": {
                    # 1 point under the ceiling on the mean, paired by seed; its lower bound under -1.6
                    "penalty (anchored)": {"accuracy": seeds(0.89, 0.885, 0.905)},
                    "riemannian (anchored)": {"accuracy": seeds(0.899, 0.9, 0.908)},
                    "auto (chosen on validation)": {
                        "vs_fewshot_ft": s(0.2),
                        "vs_best_other": {"row": "embed, penalty (anchored)", **s(-0.005)},
                    },
                },
            },
            {
                "rung": "release",
                "methods": {
                    "direct addition then few-shot FT": {
                        "accuracy": s(0.61),
                        "controls": {"spectrum": {"gain": s(0.05, ci95=0.06)}},  # interval crosses 0
                    }
                },
            },
        ],
        "transferability_check": {
            "threshold": 0.05,
            "tasks": 4,
            "misclassified_tasks": 1,
            "carries": ["same", "release"],
            "does_not": ["data", "seed"],
        },
    }
    found = {(t["target"], t["row"]): t for t in targets.targets(study)}
    near = found[("same: anchored aligner - ceiling >= -1.6", "penalty (anchored)")]
    assert near["mean"] == pytest.approx(-1.0) and near["bar"] == pytest.approx(-1.6)
    assert near["met_mean"] and near["met_lower"] is False and near["lower95"] < -1.6
    assert found[("same: anchored aligner - ceiling >= -1.6", "riemannian (anchored)")]["met_lower"]
    assert found[("same: anchored aligner - ceiling >= -1.6", "cayley (anchored)")]["missing"]
    gain = found[
        (
            "release: transfer-then-tune's gain over its spectrum control, interval > 0",
            "direct addition then few-shot FT",
        )
    ]
    assert gain["met_mean"] and gain["met_lower"] is False and gain["lower95"] == pytest.approx(-1.0)
    assert found[("release: transfer-then-tune >= 60", "direct addition then few-shot FT")]["met_lower"]
    best = found[
        ("same: auto - best other row (on test) >= -1", "auto (chosen on validation) vs embed, penalty (anchored)")
    ]
    assert best["met_mean"] and best["mean"] == pytest.approx(-0.5)
    assert found[("data: anchored - unanchored >= -1", "cayley (anchored)")]["missing"]
    separated = next(t for t in found.values() if t["target"].startswith("one transferability threshold"))
    assert separated["mean"] == 3 and separated["met_mean"] is False
    (tmp_path / "study.json").write_text(json.dumps(study))
    monkeypatch.setattr("sys.argv", ["study_targets.py", "--study", str(tmp_path)])
    targets.main()
    table = (tmp_path / "targets.md").read_text()
    line = f"| penalty (anchored) | -1.0 | {near['lower95']:+.1f} | -1.6 | yes | **no** |"
    assert f"| same: anchored aligner - ceiling >= -1.6 {line}" in table
    assert "| same: anchored aligner - ceiling >= -1.6 | cayley (anchored) | missing |" in table
    assert len(json.loads((tmp_path / "targets.json").read_text())) == len(found)
