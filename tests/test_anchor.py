"""The anchor option: beta * sum ||U - U0||^2 keeps every trained strategy near its start; inf keeps it there."""

import pytest
import torch
from planted import planted

from orthoxfer.alignment.align import align
from orthoxfer.fit.align_step import Transforms
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.strategies.settings import AlignSettings

TRAINED = (("penalty", 1e-2), ("riemannian", 1e-2), ("cayley", 1e-2))  # one lr: the same step per entry


def settings(method, **kw):
    base = dict(method=method, sites="linear", steps=30, lr=1e-2, batch_size=64, augment=1, warmup=0, log_every=0)
    return AlignSettings(**{**base, **kw})


def distance_from(alignment, start):
    return max((u - start[site]).norm().item() for site, u in alignment.matrices().items())


@pytest.mark.parametrize("method,lr", TRAINED)
def test_a_strong_anchor_keeps_u_near_the_start_and_inf_keeps_it_there(method, lr):
    source, target, _, tv, task = planted(near_identity=0.3)
    problem = AlignProblem(target, {"toy": tv}, {"toy": task}, source)
    eye = dict.fromkeys(tv.sites, torch.eye(8))
    free = distance_from(align(problem, settings(method, lr=lr)), eye)
    held = distance_from(align(problem, settings(method, lr=lr, anchor=1e4)), eye)
    assert free > 0.1 and held < 0.02 * free  # Adam-like normalised steps hover about lr per entry around U0
    frozen = align(problem, settings(method, lr=lr, anchor=float("inf")))
    assert all(torch.equal(u, torch.eye(8)) for u in frozen.matrices().values())
    assert frozen.meta["frozen"] == {"joint": True} and frozen.meta["settings"]["anchor"] == float("inf")


@pytest.mark.parametrize("method", [m for m, _ in TRAINED])
def test_an_infinite_anchor_returns_a_procrustes_start_exactly(method):
    source, target, _, tv, task = planted()
    problem = AlignProblem(target, {"toy": tv}, {"toy": task}, source)
    closed = align(problem, settings("procrustes")).matrices()
    frozen = align(problem, settings(method, init="procrustes", anchor=float("inf"))).matrices()
    assert all(torch.equal(frozen[s], closed[s]) for s in tv.sites)


@pytest.mark.parametrize("method", [m for m, _ in TRAINED])
def test_no_anchor_is_the_unanchored_step_bit_for_bit(method):
    """At beta = 0 the step adds no term (not even a zero), so every U is what it was before the option existed."""
    strategy = STRATEGIES[method]()
    assert strategy.anchoring(Transforms([]), settings(method)) is None
    source, target, _, tv, task = planted(near_identity=0.3)
    problem = AlignProblem(target, {"toy": tv}, {"toy": task}, source)
    a = align(problem, settings(method, steps=5)).matrices()
    b = align(problem, settings(method, steps=5, anchor=0.0)).matrices()
    assert all(torch.equal(a[s], b[s]) for s in tv.sites)


@pytest.mark.parametrize("method", [m for m, _ in TRAINED])
@pytest.mark.parametrize("start", ["identity", "random"])
def test_low_rank_distance_from_the_factors_equals_the_full_one(method, start):
    g = torch.Generator().manual_seed(0)
    init = torch.eye(6).expand(3, 6, 6).clone()
    if start == "random":
        init = torch.linalg.qr(torch.randn(3, 6, 6, generator=g))[0]
    torch.manual_seed(1)
    part = STRATEGIES[method]().parameterise(init, settings(method, rotation_rank=2))
    with torch.no_grad():  # move off the start: B (or R) starts where U = U0
        for p in part.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    factored = Transforms([part]).start_distances()[0]
    full = Transforms([part], [part()], [init]).start_distances()[0]
    assert factored.min() > 1e-3 and torch.allclose(factored, full, rtol=1e-4, atol=1e-6)
