"""Successive halving: trained candidates share one step budget, and the better half of each round goes on.

Every candidate first gets a short run; the better half (by validation score, ties to
the earlier candidate) runs again with more steps, and so on for ``ceil(log2 n)``
rounds. Each round spends an equal share of the budget, split among the candidates
still in it, so the search costs ``budget`` steps however many candidates there are,
and the ones that look best get the longest runs. A later round restarts a candidate
rather than continuing it: a warm-up and cosine schedule belong to one run's length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from orthoxfer.fit.select import rank

T = TypeVar("T")


def rounds(candidates: int) -> int:
    """How many rounds ``candidates`` take: one for one or two, then one more each time their number doubles."""
    return max(1, math.ceil(math.log2(candidates))) if candidates else 0


def successive_halving(
    names: Sequence[str], budget: int, fit: Callable[[str, int], T], score: Callable[[T], float]
) -> dict[str, tuple[int, T]]:
    """Each candidate's last run, as ``(steps, fit(name, steps))``, in the order of ``names``.

    ``fit`` runs a candidate for a number of steps (at least one) and ``score`` reads a
    run's validation score; NaN (a diverged run) ranks below every number.
    """
    results: dict[str, tuple[int, T]] = {}
    alive = list(names)
    total = rounds(len(alive))
    for done in range(total):
        steps = max(1, budget // (total * len(alive)))
        for name in alive:
            results[name] = (steps, fit(name, steps))
        if done < total - 1:
            ranked = sorted(alive, key=lambda n: -rank(score(results[n][1])))  # stable: ties keep the given order
            kept = set(ranked[: math.ceil(len(alive) / 2)])
            alive = [n for n in alive if n in kept]
    return {n: results[n] for n in names if n in results}
