"""Every fast path computes what the straightforward per-site computation computes, to float tolerance.

The reference side of each test is deliberately naive: one U per site, autograd through
plain matmuls, ``torch.linalg.solve``, geoopt's own manifolds, unfused AdamW, deltas
joined row by row. No timings here: ``bench-speed`` is only checked to run and write
every row.
"""

import json

import geoopt
import pytest
import torch
import torch.nn.functional as F
from rounding import assert_norm_close, assert_rounding_close, rotation_bound
from torch import nn
from torch.func import functional_call

from orthoxfer.alignment.artifact import rotate
from orthoxfer.cli.bench_speed import bench_speed_command
from orthoxfer.errors import UsageError
from orthoxfer.experiments.activation_side import ActivationSideStep
from orthoxfer.experiments.step_cost import METHODS, TRAINED
from orthoxfer.experiments.timing_models import build_models, mini_width
from orthoxfer.experiments.transfer_cost import ROWS as TRANSFER_ROWS
from orthoxfer.fit.align_step import AlignStep, StackedVector, Transforms, site_deltas
from orthoxfer.fit.finetune import FinetuneSettings, FinetuneStep
from orthoxfer.problem.align_problem import ScopedProblem, group_sites
from orthoxfer.problem.tasks import ImageEncoder
from orthoxfer.strategies.linalg import (
    cayley,
    cholesky_qr,
    gram_residual,
    inverse_by_cholesky,
    orthogonality_error,
    rotate_dense,
)
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.strategies.riemannian import CayleyStiefel, QRStiefel
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.strategies.trained import identity_stacks
from orthoxfer.vectors.sites import find_sites, param_overrides
from orthoxfer.vectors.taskvector import TaskVector

pytestmark = pytest.mark.numerics  # also run under a second CPU kernel path (tests/test_kernel_paths.py)


def near_identity(n, d, g, scale=0.2):
    a = torch.randn(n, d, d, generator=g)
    return torch.linalg.matrix_exp(scale * (a - a.mT) / 2)


def vectors(sites, g):
    dense = TaskVector({s.name: 0.1 * torch.randn(s.dim, s.dim, generator=g) for s in sites})
    lora = TaskVector(
        lora={s.name: (torch.randn(3, s.dim, generator=g), torch.randn(s.dim, 3, generator=g)) for s in sites},
        scale=0.5,
    )
    return dense, lora


def inputs(g, n=8):
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    head = nn.Linear(16, 4).requires_grad_(False)
    return x, y, head


def joined_overrides(model, sites, deltas):
    """``W + delta`` per parameter, rows joined one site at a time (the straightforward layout)."""
    out = {}
    for path in dict.fromkeys(s.param for s in sites):
        weight = model.get_parameter(path)
        rows, row = [], 0
        for site, delta in sorted(((s, d) for s, d in zip(sites, deltas) if s.param == path), key=lambda p: p[0].start):
            rows += [torch.zeros(site.start - row, weight.shape[1]), delta]
            row = site.stop
        rows.append(torch.zeros(weight.shape[0] - row, weight.shape[1]))
        out["model." + path] = weight + torch.cat(rows)
    return out


@pytest.mark.parametrize("tie", ["site", "block", "model"])
def test_batched_site_deltas_and_their_gradients_equal_per_site_rotation(tiny, tie):
    g = torch.Generator().manual_seed(0)
    sites = find_sites(tiny, "attn")
    (group,) = group_sites(sites, tie)
    for tv in vectors(sites, g):
        problem = ScopedProblem("joint", tiny, tv, {}, sites)
        stack = near_identity(len(group.keys), group.dim, g).requires_grad_()
        fast = site_deltas([group], [StackedVector.build(problem, group, 0.7, torch.device("cpu"))], [stack])[0]
        weights = torch.randn(fast.shape, generator=g)
        (fast * weights).sum().backward()

        per_site = stack.detach().clone().requires_grad_()
        us = {s.name: per_site[i] for s, i in zip(group.sites, group.index.tolist())}
        slow = rotate(tv, us)
        total = sum((0.7 * slow.delta(s.name) * weights[i]).sum() for i, s in enumerate(group.sites))
        total.backward()
        d = group.dim
        for i, s in enumerate(group.sites):  # U near orthogonal: every entry's products add up to at most ||delta||_F
            assert_rounding_close(fast[i], 0.7 * slow.delta(s.name), terms=4 * d, scale=0.7 * slow.delta(s.name).norm())
        # dL/dU sums, over the sites sharing it, products of magnitude ||delta|| ||weights|| (U near orthogonal)
        scale = sum(2 * 0.7 * tv.delta(s.name).norm() * weights[i].norm() for i, s in enumerate(group.sites))
        assert_rounding_close(stack.grad, per_site.grad, terms=6 * d, scale=scale)


def test_stacked_param_overrides_equal_row_by_row_join_values_and_gradients(tiny):
    g = torch.Generator().manual_seed(1)
    for selector in (
        "attn",
        "attn-qkv",
        "visual.transformer.resblocks.0.attn.k,visual.transformer.resblocks.1.attn.out",
    ):
        sites = find_sites(tiny, selector)
        stack = torch.randn(len(sites), 32, 32, generator=g, requires_grad=True)
        per_site = stack.detach().clone().requires_grad_()
        fast = param_overrides(tiny, sites, [stack], prefix="model.")
        slow = joined_overrides(tiny, sites, list(per_site.unbind(0)))
        assert fast.keys() == slow.keys()
        weights = {k: torch.randn(v.shape, generator=g) for k, v in slow.items()}
        sum((fast[k] * w).sum() for k, w in weights.items()).backward()
        sum((slow[k] * w).sum() for k, w in weights.items()).backward()
        for k in slow:
            assert torch.equal(fast[k], slow[k])
        assert torch.equal(stack.grad, per_site.grad)


def test_hand_written_backwards_equal_autograd():
    g = torch.Generator().manual_seed(2)
    u = near_identity(3, 12, g).requires_grad_()
    dw, out = torch.randn(3, 12, 12, generator=g), torch.randn(3, 12, 12, generator=g)
    for fast, slow in [
        (lambda m: rotate_dense(m, dw), lambda m: m.mT @ dw @ m),
        (gram_residual, lambda m: m.mT @ m - torch.eye(12)),
        (cayley, lambda m: torch.linalg.solve(torch.eye(12) + m - m.mT, torch.eye(12) - m + m.mT)),
    ]:
        a, b = u.detach().clone().requires_grad_(), u.detach().clone().requires_grad_()
        fa, fb = fast(a), slow(b)
        (fa * out).sum().backward()
        (fb * out).sum().backward()
        # U near orthogonal: entries of the values are sums of products up to ||dW||_F (or the solve's
        # condition, below 2 here), of the gradients up to ||out|| times that
        scale = 2 * max(dw.norm(), 1.0)
        assert_rounding_close(fa, fb, terms=4 * 12, scale=scale)
        assert_rounding_close(a.grad, b.grad, terms=8 * 12, scale=scale * out.norm())


def test_cuda_route_of_the_cayley_inverse_equals_lu():
    """``inverse_identity_plus_skew`` goes through a Cholesky factor on CUDA; the same function, checked here."""
    g = torch.Generator().manual_seed(9)
    a = torch.randn(4, 24, 24, generator=g)
    m = torch.eye(24) + a - a.mT  # ||S||_2 ~ 14: far rougher than any step or learned skew part
    # the Cholesky route squares the condition number of M: its error grows with cond(M)^2
    cond = torch.linalg.cond(m).max()
    assert_rounding_close(
        inverse_by_cholesky(m), torch.linalg.inv(m), terms=4 * 24, scale=cond**2 * torch.linalg.inv(m).abs().max()
    )


@pytest.mark.parametrize("factored", [False, True])
def test_rotation_at_model_precision_is_bf16_close_and_keeps_float32_gradients(tiny, factored):
    """On CUDA the vector is kept in bf16 and the rotation runs there; U and its gradient stay float32."""
    g = torch.Generator().manual_seed(10)
    sites = find_sites(tiny, "attn")
    (group,) = group_sites(sites, "site")
    for tv in vectors(sites, g):
        vec = StackedVector.build(ScopedProblem("joint", tiny, tv, {}, sites), group, 0.7, torch.device("cpu"))
        u = near_identity(len(sites), group.dim, g)
        left, right = torch.randn(2, len(sites), group.dim, 4, generator=g).mul(0.1).unbind(0)
        weights = torch.randn(len(sites), group.dim, group.dim, generator=g)
        outs, grads = [], []
        for v in (vec, vec.to(torch.bfloat16)):
            args = [left.clone().requires_grad_(), right] if factored else [u.clone().requires_grad_()]
            out = v.rotated_factored(*args) if factored else v.rotated(*args)
            (out.float() * weights).sum().backward()
            outs.append(out.float())
            grads.append(args[0].grad)
        assert grads[1].dtype == torch.float32
        assert vec.to(torch.bfloat16).rotated(u).dtype == torch.bfloat16
        assert (outs[1] - outs[0]).norm() / outs[0].norm() < 1e-2
        assert (grads[1] - grads[0]).norm() / grads[0].norm() < 2e-2


def test_manifold_retractions_equal_geoopts_own():
    g = torch.Generator().manual_seed(3)
    x = near_identity(4, 10, g, scale=1.0)
    u, v = 0.1 * torch.randn(4, 10, 10, generator=g), torch.randn(4, 10, 10, generator=g)
    # orthogonal points, steps of norm ~1: each entry sums products of magnitude up to ||v||_2 (the
    # transported vector), through a factorisation of condition ~1 + ||u||; Cholesky-QR squares it
    scale = torch.linalg.matrix_norm(v, ord=2).max()
    assert_rounding_close(QRStiefel().retr(x, u), geoopt.EuclideanStiefel().retr(x, u), terms=8 * 10, scale=2.0)
    for fast, slow in zip(CayleyStiefel().retr_transp(x, u, v), geoopt.CanonicalStiefel().retr_transp(x, u, v)):
        assert_rounding_close(fast, slow, terms=8 * 10, scale=2 * scale)
    q = cholesky_qr(x + u)
    assert_rounding_close(q.mT @ q, torch.eye(10).expand(4, 10, 10), terms=8 * 10, scale=2.0)


def reference_steps(target, sites, tv, method, retraction, x, y, head, steps):
    """``steps`` optimiser steps done the straightforward way; returns the U of every site."""
    d, alpha, clip, lr = sites[0].dim, 1.0, 1.0, 1e-3
    eye = torch.eye(d)
    if method == "riemannian":
        manifold = {"qr": geoopt.EuclideanStiefel, "cayley": geoopt.CanonicalStiefel}[retraction]()
        params = [geoopt.ManifoldParameter(eye.clone(), manifold=manifold) for _ in sites]
        optimiser = geoopt.optim.RiemannianAdam(params, lr=lr * d)  # lr per entry, as RiemannianStrategy reads it
    else:
        params = [nn.Parameter(eye.clone() if method == "penalty" else torch.zeros(d, d)) for _ in sites]
        optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=False, fused=False)

    def transforms():
        if method == "cayley":
            return [torch.linalg.solve(eye + a - a.T, eye - a + a.T) for a in params]
        return list(params)

    encoder = ImageEncoder(target)
    for _ in range(steps):
        us = transforms()
        deltas = [u.T @ tv.delta(s.name) @ u for s, u in zip(sites, us)]
        logits = head(functional_call(encoder, joined_overrides(target, sites, deltas), (x,)))
        loss = F.cross_entropy(logits, y)
        if method == "penalty":
            loss = loss + alpha * sum(torch.linalg.matrix_norm(u.T @ u - eye) ** 2 for u in us)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimiser.step()
    with torch.no_grad():
        return transforms()


@pytest.mark.parametrize("name", list(TRAINED))
@pytest.mark.parametrize("kind", ["dense", "lora"])
def test_align_step_gives_the_same_u_and_transferred_vector_as_the_per_site_computation(tiny, name, kind):
    g = torch.Generator().manual_seed(4)
    sites = find_sites(tiny, "attn")
    tv = vectors(sites, g)[kind == "lora"]
    x, y, head = inputs(g)
    method, retraction = name.split("-")[0], TRAINED[name].get("retraction", "qr")
    settings = AlignSettings(method=method, retraction=retraction, lr=1e-3, warmup=0, log_every=0, checkpoint_every=0)
    groups = group_sites(sites, "site")
    step = AlignStep(
        STRATEGIES[method](), ScopedProblem("joint", tiny, tv, {}, sites), groups, identity_stacks(groups), settings
    )
    for _ in range(3):
        step(x, y, head)
    with torch.no_grad():
        fast = {s.name: u for s, u in zip(groups[0].sites, step.module()[0])}
    slow = dict(zip([s.name for s in sites], reference_steps(tiny, sites, tv, method, retraction, x, y, head, 3)))
    # Adam turns each entry's gradient into a step of up to lr whatever its size, so an entry whose
    # gradient is rounding noise moves by a noise-driven amount: after a few steps two float32 paths
    # agree relative to how far U moved, not to eps. A wrong gradient would miss by the whole move.
    for s in sites:
        moved = torch.linalg.matrix_norm(slow[s.name] - torch.eye(32))
        assert torch.linalg.matrix_norm(fast[s.name] - slow[s.name]) <= 1e-2 * moved, s.name
        # and the transferred vector follows from the U's by a bound, not a guess
        gap = torch.linalg.matrix_norm(rotate(tv, fast).delta(s.name) - rotate(tv, slow).delta(s.name))
        assert gap <= rotation_bound(fast[s.name] - slow[s.name], slow[s.name], tv.delta(s.name)), s.name
    assert (fast[sites[0].name] - torch.eye(32)).abs().max() > 1e-4  # the steps did move U


def test_floor_step_updates_only_the_sites(tiny):
    g = torch.Generator().manual_seed(5)
    sites = find_sites(tiny, "visual.transformer.resblocks.0.attn.q,visual.transformer.resblocks.1.attn.out")
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    step = FinetuneStep(tiny, sites, FinetuneSettings(kind="embed", lr=1e-2, weight_decay=0.0))
    x, y, head = inputs(g)
    loss = step(x, y, head)[0]
    assert loss.ndim == 0 and loss.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())  # the model itself never changes
    assert [p.shape for p in step.optimiser.param_groups[0]["params"]] == [torch.Size([2, 32, 32])]
    overrides = step.module.overrides(tiny)
    in_proj = sites[0].param
    assert set(overrides) == {in_proj, sites[1].param}
    assert not torch.equal(overrides[in_proj][:32], before[in_proj][:32])  # q moved ...
    assert torch.equal(overrides[in_proj][32:], before[in_proj][32:])  # ... k and v did not
    assert not torch.equal(overrides[sites[1].param], before[sites[1].param])


@pytest.mark.parametrize("kind", ["dense", "lora"])
def test_activation_side_comparison_computes_the_same_logits(tiny, kind):
    g = torch.Generator().manual_seed(6)
    sites = find_sites(tiny, "attn")
    tv = vectors(sites, g)[kind == "lora"]
    x, _, head = inputs(g)
    groups = group_sites(sites, "block")
    problem = ScopedProblem("joint", tiny, tv, {}, sites)
    settings = AlignSettings(method="penalty", log_every=0, checkpoint_every=0)
    stacks = [near_identity(len(groups[0].keys), 32, g)]
    weight_side = AlignStep(STRATEGIES["penalty"](), problem, groups, stacks, settings)
    activation_side = ActivationSideStep(STRATEGIES["penalty"](), problem, groups, stacks, settings)
    with torch.no_grad():
        transforms = Transforms(list(weight_side.module.parts), stacks)
        expected = weight_side.logits(x, head, transforms)
        assert torch.allclose(activation_side.logits(x, head, transforms), expected, atol=1e-5)
        assert not torch.allclose(head(ImageEncoder(tiny)(x)), expected, atol=1e-3)  # the update mattered
        assert isinstance(tiny.visual.transformer.resblocks[0].attn, nn.MultiheadAttention)  # put back after use


def test_bench_speed_writes_every_row(tmp_path):
    bench_speed_command(
        arch="tiny",
        batch_size=4,
        steps=1,
        warmup=1,
        device="cpu",
        out=tmp_path,
        vector="dense,lora",
        rank=2,
        rotation_rank=2,
    )
    report = json.loads((tmp_path / "step_cost-cpu.json").read_text())
    rows = {(r["method"], r["vector"]) for r in report["rows"]}
    whole = ("floor", "procrustes", *TRANSFER_ROWS)  # timed once per round, whatever the vector kinds
    per_vector = [m for m in METHODS if m not in whole] + [f"{m} rank 2" for m in TRAINED]
    assert rows == {(m, "-") for m in whole} | {(m, v) for m in per_vector for v in ("dense", "lora r2")}
    by_name = {r["method"]: r for r in report["rows"]}
    assert by_name["theseus"]["state_mb"] == 8 * 2 * 32 * 32 * 4 / 2**20  # two 32 x 32 float32 maps per attention site
    assert all(by_name[m]["gflop"] > 0 and by_name[m]["median_s"] > 0 for m in TRANSFER_ROWS)
    assert sum("meets_goal" in r for r in report["rows"]) == 2 * 2 * len(TRAINED)
    floor, *others = report["rows"]
    assert floor["ratio_to_floor"] == 1.0 and len(floor["times_s"]) == 1 + (len(others) + 1) // 2
    assert all(r["median_s"] > 0 and len(r["times_s"]) == len(r["ratios"]) == 1 for r in others)
    assert report["arithmetic"]["floor_gflop"] > 0
    assert "| floor: fine-tune the sites (AdamW) |" in (tmp_path / "step_cost-cpu.md").read_text()
    matching = next(r for r in report["rows"] if r["method"] == "transfusion")
    assert matching["gflop"] > 0 and matching["state_mb"] > 0  # its cost matrices, and the permutations it keeps


@pytest.mark.parametrize("method", ["penalty", "riemannian", "cayley"])
@pytest.mark.parametrize("tie", ["site", "block"])
@pytest.mark.parametrize("start", ["identity", "orthogonal"])
def test_low_rank_factored_rotation_equals_rotation_by_the_full_u(tiny, method, tie, start):
    """``U = U0 (I + L R^T)``: deltas from the factors alone equal ``U^T dW U`` with U built in full, values and gradients."""
    from orthoxfer.fit.align_step import factored_deltas

    g = torch.Generator().manual_seed(7)
    sites = find_sites(tiny, "attn")
    (group,) = group_sites(sites, tie)
    settings = AlignSettings(method=method, rotation_rank=3)
    init = (
        identity_stacks([group])[0] if start == "identity" else near_identity(len(group.keys), group.dim, g, scale=1.0)
    )
    torch.manual_seed(0)
    part = STRATEGIES[method]().parameterise(init, settings)
    with torch.no_grad():
        for p in part.parameters():  # off the start (B = 0, R = I), where U would not depend on every factor
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    for tv in vectors(sites, g):
        vec = StackedVector.build(ScopedProblem("joint", tiny, tv, {}, sites), group, 0.7, torch.device("cpu"))
        base = part.base if part.base is None or not group.tied else part.base[group.index]
        carried = vec if part.base is None else vec.carried_by(base)
        fast = factored_deltas([group], [carried], [part])[0]
        weights = torch.randn(fast.shape, generator=g)
        part.zero_grad()
        (fast * weights).sum().backward()
        fast_grads = [p.grad.clone() for p in part.parameters()]
        part.zero_grad()
        slow = site_deltas([group], [vec], [part()])[0]
        (slow * weights).sum().backward()
        d = group.dim
        assert_norm_close(fast, slow, terms=8 * d)
        for a, b in zip(fast_grads, (p.grad for p in part.parameters())):
            assert_norm_close(a, b, terms=16 * d)


@pytest.mark.parametrize("start", ["identity", "orthogonal"])
def test_low_rank_penalty_from_factors_equals_the_full_gram_residual(start):
    from orthoxfer.strategies.linalg import factored_orthogonality_error
    from orthoxfer.strategies.penalty import LowRankFree

    g = torch.Generator().manual_seed(3)
    init = torch.eye(24).expand(5, 24, 24).clone() if start == "identity" else near_identity(5, 24, g, scale=1.0)
    part = LowRankFree(init, 3)
    at_start = factored_orthogonality_error(*part.factors())  # B = 0: U = U0, error 0, a finite (zero) gradient
    at_start.square().sum().backward()
    assert torch.all(at_start < 1e-3) and all(torch.isfinite(p.grad).all() for p in part.parameters())
    part.zero_grad()
    with torch.no_grad():
        part.b.add_(0.3 * torch.randn(part.b.shape, generator=g))
    fast = factored_orthogonality_error(*part.factors())
    slow = orthogonality_error(part())
    # the Gram identity cancels: its rounding is relative to ||Z^T Z C|| ~ 1 + ||L||^2, not to the small result
    assert_rounding_close(fast, slow, terms=8 * 24, scale=1 + part.factors()[0].detach().norm(dim=(-2, -1)).max() ** 2)
    assert slow.min() > 0.1
    (fast.sum()).backward()
    grads = [p.grad.clone() for p in part.parameters()]
    part.zero_grad()
    slow_again = orthogonality_error(part())
    slow_again.sum().backward()
    for a, b in zip(grads, (p.grad for p in part.parameters())):
        assert_norm_close(a, b, terms=16 * 24, scale=b.norm() / slow.min())  # d||E||/dE = E/||E||: 1/||E|| amplifies


def test_compiled_target_forward_gives_the_same_steps(tiny, compiled):
    """``compile=True`` puts the target's forward through torch.compile."""
    g = torch.Generator().manual_seed(11)
    sites = find_sites(tiny, "attn")
    groups = group_sites(sites, "site")
    problem = ScopedProblem("joint", tiny, vectors(sites, g)[0], {}, sites)
    x, y, head = inputs(g)
    runs = []
    for flag in (False, True):
        settings = AlignSettings(method="cayley", lr=1e-2, warmup=0, log_every=0, checkpoint_every=0, compile=flag)
        step = AlignStep(STRATEGIES["cayley"](), problem, groups, identity_stacks(groups), settings)
        floor = FinetuneStep(tiny, sites, FinetuneSettings(kind="embed", lr=1e-2, compile=flag))
        losses = [float(s(x, y, head)[0].detach()) for _ in range(3) for s in (step, floor)]
        runs.append((losses, [p.detach().clone() for p in (*step.module.parameters(), *floor.module.parameters())]))
    assert len(compiled) == 2 and all(compiled)  # one compiled forward per step object, and it ran
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5, abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0][0] != runs[0][0][4]  # the steps moved something


def test_bench_speed_compile_times_every_row_compiled(tmp_path, compiled):
    bench_speed_command(
        arch="tiny", batch_size=4, steps=1, warmup=1, device="cpu", out=tmp_path, methods="floor,penalty", compile=True
    )
    report = json.loads((tmp_path / "step_cost-cpu-compiled.json").read_text())
    assert (
        report["settings"]["compile"]
        and len(compiled) == 2
        and all(compiled)
        and not (tmp_path / "step_cost-cpu.json").exists()
    )
    assert [r["method"] for r in report["rows"]] == ["floor", "penalty"] and all(
        r["gflop"] is None for r in report["rows"]
    )
    assert "through torch.compile" in (tmp_path / "step_cost-cpu-compiled.md").read_text()


def test_mini_architecture_names_build_the_width_ladders_models():
    """``mini-w<W>`` is the mini recipe at width W (heads 32 wide, so more of them); A and B differ in their init."""
    assert (mini_width("mini"), mini_width("mini-w64"), mini_width("ViT-B-32")) == (128, 64, None)
    a, b = build_models("mini-w64", torch.device("cpu"))
    block = a.visual.transformer.resblocks[0].attn
    assert (block.embed_dim, block.num_heads) == (64, 2)
    assert not torch.equal(block.in_proj_weight, b.visual.transformer.resblocks[0].attn.in_proj_weight)
    with pytest.raises(UsageError, match="multiple of the head width"):
        build_models("mini-w40", torch.device("cpu"))
