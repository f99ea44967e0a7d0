"""The study's statistics: paired differences by seed, their intervals and bounds, Holm's adjustment over a family
of distinct comparisons, and the power a family of that size leaves.

With a handful of seeds and dozens of comparisons per rung, some intervals exclude 0 by
chance: each comparison's paired t-test p-value is Holm-adjusted over its rung
(``p_holm``), and each rung states its power: the smallest gain its design detects with
80% power at the level Holm's first step asks (5% over the family's size, two-sided), from
the median standard deviation of its paired differences, and each comparison the same
from its own. A difference that is the same
on every seed (rows that draw nothing from the seed) is not tested: it has no p-value and
is left out of the family.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from scipy import stats

from orthoxfer.report.tables import interval


def stat(values: list[float]) -> dict[str, Any]:
    """Mean, 95% half-width (None for one seed), the one-sided 95% lower bound (what a claim "at least x" is read
    against: a margin, not a difference from 0) and the values it came from."""
    mean, half = interval(values)
    n = len(values)
    lower = None if half is None else mean - float(stats.t.ppf(0.95, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "ci95": half, "lower95": lower, "per_seed": values}


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """The paired difference a - b by seed: its mean, 95% interval and two-sided t-test p-value (None for one seed),
    and both sides' values (``compared``: what tells a copy of a comparison from another with the same differences)."""
    diffs = [x - y for x, y in zip(a, b)]
    out = {**stat(diffs), "compared": [list(a), list(b)]}
    sd = statistics.stdev(diffs) if len(diffs) > 1 else None
    if sd is None:
        out["p"] = None
    elif sd == 0:  # the same difference on every seed (rows that draw nothing from the seed): no test to make
        out["p"], out["untested"] = None, "no seed-to-seed variation"
    else:
        out["p"] = float(2 * stats.t.sf(abs(out["mean"]) / (sd / math.sqrt(len(diffs))), len(diffs) - 1))
    return out


def distinct(tests: list[dict[str, Any]]) -> dict[tuple[tuple[float, ...], ...], list[dict[str, Any]]]:
    """The tested comparisons grouped by both sides' values on every seed: rows that compute the same thing (every
    data-free map is the identity on ``same``) make one hypothesis, counted once, not one per copy; two comparisons
    whose differences merely agree stay two."""
    groups: dict[tuple[tuple[float, ...], ...], list[dict[str, Any]]] = {}
    for t in tests:
        if t.get("p") is not None:
            key = tuple(tuple(round(v, 12) for v in side) for side in t["compared"])
            groups.setdefault(key, []).append(t)
    return groups


def holm(tests: list[dict[str, Any]]) -> None:
    """Holm's step-down adjustment of the tests' p-values, in place (``p_holm``), over one family of distinct tests."""
    ranked = sorted(distinct(tests).values(), key=lambda copies: copies[0]["p"])
    running = 0.0
    for i, copies in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - i) * copies[0]["p"]))
        for t in copies:
            t["p_holm"] = running


def detectable_gain(tests: list[dict[str, Any]], n: int) -> float | None:
    """The smallest paired gain detected with 80% power at the level Holm's first step asks of a family of that many
    distinct tests (5% / m, two-sided): what a gain must reach to be called with that family's adjustment, not at an
    unadjusted 5%. Each tested comparison gets its own (``detectable``, from its own sd: a trained aligner's gains
    vary by seed far more than a data-free transfer's, so one figure per rung would understate what they need); the
    rung's figure returned is the median over the distinct tests."""
    groups = list(distinct(tests).values())
    if n < 2 or not groups:
        return None
    factor = (stats.t.ppf(1 - 0.05 / len(groups) / 2, n - 1) + stats.t.ppf(0.8, n - 1)) / math.sqrt(n)
    for copies in groups:
        for t in copies:
            t["detectable"] = float(factor * statistics.stdev(copies[0]["per_seed"]))
    return statistics.median(copies[0]["detectable"] for copies in groups)
