"""The transferability check in the study's summary: per-task values from the rows, the threshold that separates the
rungs where the vector carries from those where it does not, and the plot against it (synthetic rows, no training)."""

import dataclasses
import json

import pytest

from orthoxfer.experiments.bench import Row
from orthoxfer.experiments.study import RungResult
from orthoxfer.report.separation import separation
from orthoxfer.report.study import summarise_study, write_study

TASKS = ("cars", "digits")


def rung(name, per_task):
    """A study summary's rung with only what the check reads: per-task transferability, a list per seed."""
    return {"rung": name, "transferability": {"per_task": per_task}}


def test_separable_rungs_give_no_errors_and_a_threshold_between_the_groups():
    rungs = [
        rung("same", {"cars": [0.40, 0.35], "digits": [0.50, 0.45]}),
        rung("release", {"cars": [0.12, 0.15], "digits": [0.20, 0.18]}),
        rung("data", {"cars": [0.01, -0.02], "digits": [0.03, 0.00]}),
        rung("seed", {"cars": [0.02, 0.05], "digits": [-0.01, 0.04]}),
        rung("planted", {"cars": [0.90, 0.90], "digits": [0.90, 0.90]}),  # not on the ladder: left out
    ]
    check = separation(rungs, [0, 1])
    assert check["misclassified_tasks"] == check["misclassified_values"] == 0 and check["misclassified"] == []
    # a task's value is its mean over seeds: seed's cars 0.035 and release's cars 0.135 are the neighbours
    assert check["between"] == pytest.approx([0.035, 0.135]) and check["threshold"] == pytest.approx(0.085)
    assert check["tasks"] == 2 and check["held_out_misclassified_tasks"] == 0  # each task's cut separates the other
    assert check["seed_spread"] == pytest.approx(0.05)
    digits = next(v for v in check["values"] if v["task"] == "digits")
    assert digits["rungs"] == pytest.approx({"same": 0.475, "release": 0.19, "data": 0.015, "seed": 0.015})


def test_overlapping_rungs_report_each_task_the_threshold_gets_wrong():
    rungs = [
        rung("same", {"cars": [0.40, 0.30], "digits": [0.50, 0.45]}),
        rung("release", {"cars": [0.03, 0.03], "digits": [0.20, 0.18]}),  # cars carries less than ...
        rung("data", {"cars": [0.01, 0.00], "digits": [0.02, 0.00]}),
        rung("seed", {"cars": [0.05, 0.05], "digits": [0.01, 0.04]}),  # ... cars here, where it does not
    ]
    check = separation(rungs, [0, 1])
    assert check["misclassified_tasks"] == 1 and check["tasks"] == 2
    assert check["misclassified"] == [{"task": "cars", "rungs": ["release"]}]  # one value wrong, not two
    assert check["between"] == pytest.approx([0.05, 0.19]) and check["misclassified_values"] == 1
    # left out, cars meets digits' cut (0.1075: release 0.03 below it) and digits meets cars' (0.2: release 0.19
    # below it): both fail, which the in-sample count hides
    assert check["held_out_misclassified_tasks"] == 2


def test_no_check_without_both_groups_or_per_task_values():
    assert separation([rung("same", {"cars": [0.4]}), rung("release", {"cars": [0.2]})], [0]) is None
    assert separation([rung("same", {"cars": [0.4]}), {"rung": "data", "transferability": None}], [0]) is None


def records(row, seed, test, validation=None):
    record = {"row": row.id, "label": row.label, **dataclasses.asdict(row), "seed": seed, "seconds": 1.0}
    record["accuracy"] = {"mean": test}
    if validation is not None:
        record["validation_score"] = dict(zip(TASKS, validation))
    return record


def rung_result(name, direct, transfusion, gain):
    """Two seeds; target scores 0.2 on both tasks' validation; the data-free transfers' given validation scores; a
    cayley row ``gain`` over its spectrum control on test."""
    rows = []
    for s in (0, 1):
        rows += [
            records(Row("", "target"), s, 0.2, (0.2, 0.2)),
            records(Row("", "finetune"), s, 0.4),
            records(Row("embed", "direct"), s, 0.2 + direct[s][0], direct[s]),
            records(Row("embed", "transfusion"), s, 0.2, transfusion[s]),
            records(Row("embed", "cayley"), s, 0.4 + gain),
            records(Row("embed", "cayley", control="spectrum"), s, 0.4),
        ]
    related = {"0": [{"cka": 0.9}], "1": [{"cka": 0.9}]}
    return RungResult(name, "mini:a", f"mini:{name}", list(TASKS), ("spectrum",), rows, related, 1.0)


def test_the_summary_reads_per_task_values_from_the_rows_and_writes_the_check_and_its_plot(tmp_path):
    results = [
        rung_result("release", [(0.3, 0.25), (0.35, 0.3)], [(0.25, 0.3), (0.2, 0.2)], 0.1),
        rung_result("data", [(0.2, 0.21), (0.22, 0.2)], [(0.19, 0.24), (0.2, 0.2)], 0.0),
    ]
    meta = {
        "title": "synthetic",
        "seeds": [0, 1],
        "tasks": list(TASKS),
        "model_seed": 0,
        "controls": ["spectrum"],
        "seconds": 1.0,
        "machine": {"cpu": "cpu", "device": "cpu"},
    }
    study = summarise_study(results, ["cayley", "transfusion"], meta)
    release = study["rungs"][0]["transferability"]
    # per task and seed the better data-free transfer's validation gain; the rung's mean is over tasks first
    assert release["per_task"]["cars"] == pytest.approx([0.1, 0.15])
    assert release["per_task"]["digits"] == pytest.approx([0.1, 0.1])
    assert release["per_seed"] == pytest.approx([0.1, 0.125])  # the mean over tasks of each task's better transfer
    check = study["transferability_check"]
    # tasks' means over seeds: data's cars 0.01, digits 0.02; release's cars 0.125, digits 0.1
    assert check["misclassified_tasks"] == 0 and check["between"] == pytest.approx([0.02, 0.1])
    files = write_study(tmp_path, study)
    assert [f.name for f in files] == ["study.json", "study.md", "gain_vs_cka.png", "gain_vs_transferability.png"]
    assert all(f.stat().st_size > 0 for f in files)
    assert json.loads(files[0].read_text())["transferability_check"]["threshold"] == pytest.approx(0.06)
    md = files[1].read_text()
    assert "| cars | +12.5 | +1.0 | yes |" in md
    assert "Threshold +6.00 points (midway between +2.00 and +10.00): 2 of 2 tasks separated" in md
