"""The study's comparisons read from stored rows: distinct tests in Holm's family, one-sided bounds for claims of
"at least", and an anchored row's control with its beta chosen as its row's was."""

import dataclasses
import math
import statistics

import pytest
from scipy import stats

from orthoxfer.experiments.bench import Row
from orthoxfer.experiments.study import RungResult
from orthoxfer.report.statistics import detectable_gain, holm, paired, stat
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


def test_comparisons_that_only_share_their_differences_stay_distinct_and_power_counts_copies_once():
    one = paired([0.60, 0.62, 0.65], [0.55, 0.58, 0.60])
    other = paired([0.80, 0.81, 0.84], [0.75, 0.77, 0.79])  # the same differences, other rows: another hypothesis
    holm([one, other])
    assert one["per_seed"] == pytest.approx(other["per_seed"]) and one["p_holm"] == pytest.approx(2 * one["p"])
    a, b = [0.5, 0.6, 0.55], [0.4, 0.42, 0.47]
    varied = paired([0.5, 0.52, 0.49], [0.5, 0.5, 0.5])
    once = detectable_gain([paired(a, b), varied], 3)
    assert detectable_gain([paired(a, b), paired(a, b), paired(a, b), varied], 3) == pytest.approx(once)
    assert detectable_gain([one, other, varied], 3) != pytest.approx(detectable_gain([one, varied], 3))


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


def test_an_anchored_rows_control_has_its_beta_chosen_once_per_rung_on_validation_as_the_rows_was():
    """With a beta chosen on the real vector, the anchored control stays near a start that carries nothing; the
    control's beta is chosen as the row's was: once per rung, the better of anchored and unanchored on validation
    (never on test), not per seed or task, which would give the control more choice than its row had."""
    tasks = ("mnist", "svhn")
    anchored = Row("embed", "penalty", anchored=True)

    def control_rows(row, test, validation):
        return [record(row, s, {t: v + s / 100 for t, v in test.items()}, validation) for s in (0, 1)]

    real = [record(anchored, s, {"mnist": 0.90, "svhn": 0.80}, {"mnist": 0.9, "svhn": 0.8}) for s in (0, 1)]
    held = control_rows(
        dataclasses.replace(anchored, control="spectrum"), {"mnist": 0.30, "svhn": 0.20}, {"mnist": 0.6, "svhn": 0.1}
    )
    # unanchored: better on mnist's test and worse on svhn's validation, better on validation over both tasks
    free = control_rows(
        Row("embed", "penalty", control="spectrum"), {"mnist": 0.70, "svhn": 0.10}, {"mnist": 0.5, "svhn": 0.4}
    )
    result = RungResult("same", "mini:a", "mini:a", list(tasks), ("spectrum",), real + held + free, {}, 1.0)
    study = summarise_study([result], ["penalty"], {"seeds": [0, 1]})
    control = study["rungs"][0]["methods"]["penalty (anchored)"]["controls"]["spectrum"]
    assert control["chosen"] == {
        "row": "unanchored",
        "validation": pytest.approx({"anchored": 0.35, "unanchored": 0.45}),
    }
    assert control["accuracy"]["per_seed"] == pytest.approx([0.40, 0.41])  # the unanchored row whole, every task
    assert control["gain"]["per_seed"] == pytest.approx([0.85 - 0.40, 0.85 - 0.41])
    assert study["rungs"][0]["methods"]["penalty (anchored)"]["per_task"] == pytest.approx({"mnist": 0.9, "svhn": 0.8})
    meta = {
        "title": "t",
        "tasks": list(tasks),
        "model_seed": 0,
        "seconds": 1.0,
        "machine": {"cpu": "c", "device": "cpu"},
    }
    table = markdown({**study, "meta": {**study["meta"], **meta}})
    assert "| penalty (anchored) | 85.0 " in table and "| spectrum (chosen) | 40.5 " in table
    tied = control_rows(
        Row("embed", "penalty", control="spectrum"), {"mnist": 0.70, "svhn": 0.10}, {"mnist": 0.6, "svhn": 0.1}
    )
    even = RungResult("same", "mini:a", "mini:a", list(tasks), ("spectrum",), real + held + tied, {}, 1.0)
    chosen = summarise_study([even], ["penalty"], {"seeds": [0, 1]})["rungs"][0]["methods"]["penalty (anchored)"]
    assert chosen["controls"]["spectrum"]["chosen"]["row"] == "anchored"  # a tie keeps the row's own beta
    rows = real + held
    only_anchored = RungResult("same", "mini:a", "mini:a", list(tasks), ("spectrum",), rows, {}, 1.0)
    alone = summarise_study([only_anchored], ["penalty"], {"seeds": [0, 1]})["rungs"][0]["methods"]
    assert "chosen" not in alone["penalty (anchored)"]["controls"]["spectrum"]  # no choice to give: the row as run
    assert alone["penalty (anchored)"]["controls"]["spectrum"]["accuracy"]["mean"] == pytest.approx(0.255)


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
