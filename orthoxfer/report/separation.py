"""Does the transferability check tell the rungs apart? One threshold, chosen on validation, and where it fails.

On the mini ladder the vector carries on ``same`` and ``release`` and not on ``data`` and
``seed``. A user cannot run the study on their own pair, but they can measure each
task's transferability (the validation gain of the best data-free transfer over target
only) in seconds. That helps them only if one number, the same for every task and pair,
says which side of the ladder they are on: this module finds the threshold that best
separates the two groups on the study's own (task, seed) values and says which pairs it
gets wrong. It reads validation gains only, so the study's test accuracies never choose
the threshold.

The unit is the task: direct addition and transfusion read no few-shot data, and every
seed scores them on the same validation set with the same heads, so a task's value is
the same on every seed (its mean over seeds is used; ``seed_spread`` records the largest
difference between seeds, 0 where the seeds add nothing) and the evidence is one value per
(rung, task), not per (rung, task, seed). A task is separated when every carrying rung's
value lies above the threshold and every other rung's at or below it. The threshold is the
midpoint between two neighbouring values, the one that leaves fewest tasks unseparated
(then fewest values on the wrong side, then the widest gap): with separable groups it is
the midpoint between the highest non-carrying value and the lowest carrying one. Chosen
and scored on the same values its error is optimistic, so each task is also judged by the
threshold the other tasks choose (leave one task out).
"""

from __future__ import annotations

from typing import Any

CARRIES = ("same", "release")  # the vector carries: the target is the source, or the source pre-trained on
DOES_NOT = ("data", "seed")  # independently pre-trained: it does not


def separation(rungs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any] | None:
    """The threshold on per-task transferability that best separates ``CARRIES`` from ``DOES_NOT``, with the values
    it was read from and the tasks it misclassifies; None unless both groups have per-task values.

    ``rungs`` are the study summary's; each ``transferability.per_task`` lists a task's values in ``seeds``' order.
    """
    per_seed = {
        (r["rung"], task): values
        for r in rungs
        if r["rung"] in (*CARRIES, *DOES_NOT) and (r.get("transferability") or {}).get("per_task")
        for task, values in r["transferability"]["per_task"].items()
    }
    points = [(rung, task, sum(v) / len(v)) for (rung, task), v in per_seed.items()]
    if not {p[0] for p in points} & set(CARRIES) or not {p[0] for p in points} & set(DOES_NOT):
        return None
    (n_tasks, n_wrong, _), threshold, between, wrong = _threshold(points)
    tasks = list(dict.fromkeys(p[1] for p in points))
    held_out = []  # each task judged by the threshold the other tasks chose: what a new task would see
    for task in tasks if len(tasks) > 1 else []:
        _, cut, _, _ = _threshold([p for p in points if p[1] != task])
        held_out += [task for p in points if p[1] == task and (p[2] > cut) != (p[0] in CARRIES)]
    table: dict[str, dict[str, float]] = {}
    for rung, task, value in points:
        table.setdefault(task, {})[rung] = value
    misclassified: dict[str, list[str]] = {}
    for rung, task, _ in wrong:
        misclassified.setdefault(task, []).append(rung)
    return {
        "carries": list(CARRIES),
        "does_not": list(DOES_NOT),
        "seeds": list(seeds),
        "seed_spread": max(max(v) - min(v) for v in per_seed.values()),
        "values": [{"task": t, "rungs": v} for t, v in table.items()],
        "threshold": threshold,
        "between": list(between),
        "tasks": len(table),
        "misclassified_tasks": n_tasks,
        "misclassified_values": n_wrong,
        "misclassified": [{"task": t, "rungs": v} for t, v in misclassified.items()],
        "held_out_misclassified_tasks": len(set(held_out)) if len(tasks) > 1 else None,
    }


def _threshold(points: list[tuple[str, str, float]]) -> tuple[tuple[int, int, float], float, tuple, list]:
    """The midpoint threshold with fewest tasks unseparated, then fewest values, then the widest gap."""
    values = sorted({p[2] for p in points})
    scored = []
    for lo, hi in list(zip(values, values[1:])) or [(values[0], values[0])]:  # one value: all on one side
        threshold = (lo + hi) / 2
        wrong = [p for p in points if (p[2] > threshold) != (p[0] in CARRIES)]
        scored.append(((len({task for _, task, _ in wrong}), len(wrong), -(hi - lo)), threshold, (lo, hi), wrong))
    return min(scored, key=lambda s: s[0])


def separation_markdown(check: dict[str, Any]) -> list[str]:
    """study.md's section: each task's value per rung, the threshold, and the tasks it gets wrong."""
    rungs = [r for r in (*check["carries"], *check["does_not"]) if any(r in v["rungs"] for v in check["values"])]
    wrong = {m["task"]: m["rungs"] for m in check["misclassified"]}
    lines = [
        "## The transferability check: does one threshold tell the rungs apart?",
        "",
        "| task | " + " | ".join(f"`{r}`" for r in rungs) + " | separated |",
        "|---|" + "---|" * len(rungs) + "---|",
    ]
    for v in check["values"]:
        cells = [f"{100 * v['rungs'][r]:+.1f}" if r in v["rungs"] else "-" for r in rungs]
        missed = wrong.get(v["task"])
        lines.append(f"| {v['task']} | {' | '.join(cells)} | {'no: ' + ', '.join(missed) if missed else 'yes'} |")
    lo, hi = check["between"]
    held_out = check.get("held_out_misclassified_tasks")
    lines += [
        "",
        f"Threshold {100 * check['threshold']:+.2f} points (midway between {100 * lo:+.2f} and {100 * hi:+.2f}): "
        f"{check['tasks'] - check['misclassified_tasks']} of {check['tasks']} tasks separated, "
        f"{check['misclassified_values']} values on the wrong side"
        + (
            f"; judged by the threshold the other tasks choose, {held_out} tasks misclassified (leave one task out: "
            "what a new task would meet)"
            if held_out is not None
            else ""
        )
        + ". Transferability: the validation gain of the best data-free transfer (direct addition, transfusion) "
        f"over target only, per task, its mean over seeds {check['seeds']} (they differ by at most "
        f"{100 * check['seed_spread']:.1f} points: these transfers read no few-shot data, so the task, not the "
        "seed, is the unit). A task is separated "
        f"when its {' and '.join(f'`{r}`' for r in check['carries'])} values lie above the threshold and its "
        f"{' and '.join(f'`{r}`' for r in check['does_not'])} values at or below it. The threshold is chosen on "
        "these validation values alone (fewest tasks misclassified, then fewest values, then the widest gap); test "
        "accuracy never enters it.",
        "",
    ]
    return lines
