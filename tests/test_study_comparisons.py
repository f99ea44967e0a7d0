"""The study's comparisons read from stored rows: distinct tests in Holm's family, one-sided bounds for claims of
"at least", and an anchored row's control given the choice its row had."""

import dataclasses
import math
import statistics

import pytest
from scipy import stats

from orthoxfer.experiments.bench import Row
from orthoxfer.experiments.study import RungResult
from orthoxfer.report.statistics import holm, paired, stat
from orthoxfer.report.study import markdown, summarise_study


def test_copies_of_one_comparison_count_once_in_holms_family():
    a, b = [0.5, 0.6, 0.55], [0.4, 0.42, 0.47]
    copies = [paired(a, b), paired(a, b), paired(a, b)]  # e.g. three data-free rows that are all the identity
    other = paired([0.5, 0.52, 0.49], [0.5, 0.5, 0.5])
    holm([*copies, other])
    first, second = sorted([copies[0]["p"], other["p"]])
    assert {t["p_holm"] for t in copies} == {copies[0]["p_holm"]}  # one hypothesis, one adjusted p
    assert min(copies[0]["p_holm"], other["p_holm"]) == pytest.approx(2 * first)  # two distinct tests, not four
    assert max(copies[0]["p_holm"], other["p_holm"]) == pytest.approx(max(2 * first, second))


def test_the_lower_bound_is_one_sided_at_95_percent():
    values = [0.80, 0.84, 0.82, 0.79, 0.85]
    bound = stat(values)["lower95"]
    sd = statistics.stdev(values)
    assert bound == pytest.approx(statistics.mean(values) - stats.t.ppf(0.95, 4) * sd / math.sqrt(5))
    assert statistics.mean(values) - stat(values)["ci95"] < bound  # tighter than the two-sided interval's end
    assert stat([0.8])["lower95"] is None


def record(row: Row, seed: int, accuracy: dict[str, float], validation: dict[str, float]) -> dict:
    mean = statistics.mean(accuracy.values())
    return {
        "row": row.id,
        "label": row.label,
        **dataclasses.asdict(row),
        "seed": seed,
        "accuracy": {**accuracy, "mean": mean},
        "validation_score": validation,
    }


def test_an_anchored_rows_control_takes_per_task_the_better_on_validation_of_anchored_and_unanchored():
    """With a beta chosen on the real vector, the anchored control stays near a start that carries nothing; the
    control is given the choice its row had, per seed and task, on validation (never on test)."""
    tasks = ("mnist", "svhn")
    anchored = Row("embed", "penalty", anchored=True)
    rows = (
        [record(anchored, s, {"mnist": 0.90, "svhn": 0.80}, {"mnist": 0.9, "svhn": 0.8}) for s in (0, 1)]
        + [  # the anchored control: better on mnist's validation, worse on svhn's
            record(
                dataclasses.replace(anchored, control="spectrum"),
                s,
                {"mnist": 0.30, "svhn": 0.20},
                {"mnist": 0.6, "svhn": 0.1},
            )
            for s in (0, 1)
        ]
        + [  # unanchored: its test on mnist is better, but validation did not choose it there
            record(
                Row("embed", "penalty", control="spectrum"),
                s,
                {"mnist": 0.70, "svhn": 0.50 + s / 10},
                {"mnist": 0.5, "svhn": 0.4},
            )
            for s in (0, 1)
        ]
    )
    result = RungResult("same", "mini:a", "mini:a", list(tasks), ("spectrum",), rows, {}, 1.0)
    study = summarise_study([result], ["penalty"], {"seeds": [0, 1]})
    control = study["rungs"][0]["methods"]["penalty (anchored)"]["controls"]["spectrum"]
    assert control["accuracy"]["per_seed"] == pytest.approx([(0.30 + 0.50) / 2, (0.30 + 0.60) / 2])
    assert control["chosen"] == {"anchored": 2, "unanchored": 2}
    assert study["rungs"][0]["methods"]["penalty (anchored)"]["per_task"] == pytest.approx({"mnist": 0.9, "svhn": 0.8})
    assert control["gain"]["per_seed"] == pytest.approx([0.85 - 0.40, 0.85 - 0.45])
    meta = {
        "title": "t",
        "tasks": list(tasks),
        "model_seed": 0,
        "seconds": 1.0,
        "machine": {"cpu": "c", "device": "cpu"},
    }
    assert "| penalty (anchored) | 85.0 " in markdown({**study, "meta": {**study["meta"], **meta}})
    assert "| spectrum (chosen) | 42.5 " in markdown({**study, "meta": {**study["meta"], **meta}})
    only_anchored = RungResult("same", "mini:a", "mini:a", list(tasks), ("spectrum",), rows[:4], {}, 1.0)
    alone = summarise_study([only_anchored], ["penalty"], {"seeds": [0, 1]})["rungs"][0]["methods"]
    assert "chosen" not in alone["penalty (anchored)"]["controls"]["spectrum"]  # no choice to give: the row as run
    assert alone["penalty (anchored)"]["controls"]["spectrum"]["accuracy"]["mean"] == pytest.approx(0.25)


def test_steps_chosen_on_validation_are_summarised_per_row():
    tune = Row("embed", "tune", "direct")
    rows = [
        {**record(tune, s, {"mnist": 0.9, "svhn": 0.8}, {"mnist": 0.9, "svhn": 0.8}), "chosen_step": steps}
        for s, steps in enumerate([{"mnist": 0, "svhn": 0}, {"mnist": 0, "svhn": 30}])
    ]
    result = RungResult("same", "mini:a", "mini:a", ["mnist", "svhn"], ("spectrum",), rows, {}, 1.0)
    study = summarise_study([result], [], {"seeds": [0, 1]})
    (entry,) = study["rungs"][0]["methods"].values()
    assert entry["chosen_step"] == {"at_start": 0.75, "median": 0}
    meta = {"title": "t", "tasks": ["mnist"], "model_seed": 0, "seconds": 1.0, "machine": {"cpu": "c", "device": "cpu"}}
    assert "| same | direct addition then few-shot FT | 75% | 0 |" in markdown(
        {**study, "meta": {**study["meta"], **meta}}
    )
