"""Does the transferability check tell the rungs apart? One threshold, chosen on validation, and where it fails.

On the mini ladder the vector carries on ``same`` and ``release`` and not on ``data`` and
``seed``. A user cannot run the study on their own pair, but they can measure each
task's transferability (the validation gain of the best data-free transfer over target
only) in seconds. That helps them only if one number, the same for every task and pair,
says which side of the ladder they are on: this module finds the threshold that best
separates the two groups on the study's own (task, seed) values and says which pairs it
gets wrong. It reads validation gains only, so the study's test accuracies never choose
the threshold.

A (task, seed) pair is separated when every carrying rung's value lies above the
threshold and every other rung's at or below it. The threshold is the midpoint between
two neighbouring values, the one that leaves fewest pairs unseparated (then fewest
values on the wrong side, then the widest gap): with separable groups it is the
midpoint between the highest non-carrying value and the lowest carrying one.
"""

from __future__ import annotations

from typing import Any

CARRIES = ("same", "release")  # the vector carries: the target is the source, or the source pre-trained on
DOES_NOT = ("data", "seed")  # independently pre-trained: it does not


def separation(rungs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any] | None:
    """The threshold on per-(task, seed) transferability that best separates ``CARRIES`` from ``DOES_NOT``, with the
    values it was read from and the pairs it misclassifies; None unless both groups have per-task values.

    ``rungs`` are the study summary's; each ``transferability.per_task`` lists a task's values in ``seeds``' order.
    """
    points = [
        (r["rung"], task, seed, value)
        for r in rungs
        if r["rung"] in (*CARRIES, *DOES_NOT) and (r.get("transferability") or {}).get("per_task")
        for task, values in r["transferability"]["per_task"].items()
        for seed, value in zip(seeds, values)
    ]
    if not {p[0] for p in points} & set(CARRIES) or not {p[0] for p in points} & set(DOES_NOT):
        return None
    (n_pairs, n_wrong, _), threshold, between, wrong = _threshold(points)
    held_out = []  # each seed's pairs judged by the threshold the other seeds chose: what a new pair would see
    for seed in seeds if len(seeds) > 1 else []:
        _, cut, _, _ = _threshold([p for p in points if p[2] != seed])
        held_out += [(p[1], seed) for p in points if p[2] == seed and (p[3] > cut) != (p[0] in CARRIES)]
    table: dict[tuple[str, int], dict[str, float]] = {}
    for rung, task, seed, value in points:
        table.setdefault((task, seed), {})[rung] = value
    misclassified: dict[tuple[str, int], list[str]] = {}
    for rung, task, seed, _ in wrong:
        misclassified.setdefault((task, seed), []).append(rung)
    return {
        "carries": list(CARRIES),
        "does_not": list(DOES_NOT),
        "values": [{"task": t, "seed": s, "rungs": v} for (t, s), v in table.items()],
        "threshold": threshold,
        "between": list(between),
        "pairs": len(table),
        "misclassified_pairs": n_pairs,
        "misclassified_values": n_wrong,
        "misclassified": [{"task": t, "seed": s, "rungs": v} for (t, s), v in misclassified.items()],
        "held_out_misclassified_pairs": len(set(held_out)) if len(seeds) > 1 else None,
    }


def _threshold(points: list[tuple[str, str, int, float]]) -> tuple[tuple[int, int, float], float, tuple, list]:
    """The midpoint threshold with fewest (task, seed) pairs unseparated, then fewest values, then the widest gap."""
    values = sorted({p[3] for p in points})
    scored = []
    for lo, hi in list(zip(values, values[1:])) or [(values[0], values[0])]:  # one value: all on one side
        threshold = (lo + hi) / 2
        wrong = [p for p in points if (p[3] > threshold) != (p[0] in CARRIES)]
        pairs = {(task, seed) for _, task, seed, _ in wrong}
        scored.append(((len(pairs), len(wrong), -(hi - lo)), threshold, (lo, hi), wrong))
    return min(scored, key=lambda s: s[0])


def separation_markdown(check: dict[str, Any]) -> list[str]:
    """study.md's section: each (task, seed)'s value per rung, the threshold, and the pairs it gets wrong."""
    rungs = [r for r in (*check["carries"], *check["does_not"]) if any(r in v["rungs"] for v in check["values"])]
    wrong = {(m["task"], m["seed"]): m["rungs"] for m in check["misclassified"]}
    lines = [
        "## The transferability check: does one threshold tell the rungs apart?",
        "",
        "| task | seed | " + " | ".join(f"`{r}`" for r in rungs) + " | separated |",
        "|---|---|" + "---|" * len(rungs) + "---|",
    ]
    for v in check["values"]:
        cells = [f"{100 * v['rungs'][r]:+.1f}" if r in v["rungs"] else "-" for r in rungs]
        missed = wrong.get((v["task"], v["seed"]))
        lines.append(
            f"| {v['task']} | {v['seed']} | {' | '.join(cells)} | {'no: ' + ', '.join(missed) if missed else 'yes'} |"
        )
    lo, hi = check["between"]
    lines += [
        "",
        f"Threshold {100 * check['threshold']:+.2f} points (midway between {100 * lo:+.2f} and {100 * hi:+.2f}): "
        f"{check['pairs'] - check['misclassified_pairs']} of {check['pairs']} (task, seed) pairs separated, "
        f"{check['misclassified_values']} values on the wrong side"
        + (
            f"; judged by the threshold the other seeds choose, {check['held_out_misclassified_pairs']} pairs "
            "misclassified (leave one seed out: what a new pair would meet)"
            if check.get("held_out_misclassified_pairs") is not None
            else ""
        )
        + ". Transferability: the validation gain of the "
        "best data-free transfer (direct addition, transfusion) over target only, per task; a pair is separated "
        f"when its {' and '.join(f'`{r}`' for r in check['carries'])} values lie above the threshold and its "
        f"{' and '.join(f'`{r}`' for r in check['does_not'])} values at or below it. The threshold is chosen on these validation "
        "values alone (fewest pairs misclassified, then fewest values, then the widest gap); test accuracy never "
        "enters it.",
        "",
    ]
    return lines
