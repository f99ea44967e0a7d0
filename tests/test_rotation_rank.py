"""``rotation_rank = k``: U moves away from its start only inside a rank-k family, for every trained strategy."""

import json
from types import SimpleNamespace

import geoopt
import pytest
import torch
from planted import planted
from rounding import assert_norm_close, assert_rounding_close
from typer.testing import CliRunner

from orthoxfer.alignment.align import align
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.fit.align_step import AlignStep
from orthoxfer.problem.align_problem import AlignProblem, ScopedProblem, group_sites
from orthoxfer.runs import Run
from orthoxfer.strategies.linalg import cayley_lowrank, cayley_lowrank_apply
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.strategies.riemannian import CayleyStiefel
from orthoxfer.strategies.settings import AlignSettings, read_config
from orthoxfer.strategies.trained import identity_stacks
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import TaskVector

pytestmark = pytest.mark.numerics  # also run under a second CPU kernel path (tests/test_kernel_paths.py)

runner = CliRunner()
TRAINED = ("penalty", "riemannian", "cayley")
K = 2
MAX_RANK = {"cayley": 2 * K, "riemannian": K, "penalty": K}  # rank of U - U0 (S = AB^T - BA^T has rank 2k)


def settings(method, **kw):
    base = dict(
        method=method,
        sites="linear",
        steps=20,
        lr=5e-2,
        batch_size=64,
        augment=1,
        warmup=0,
        log_every=1,
        rotation_rank=K,
        alpha=0.1,
    )
    return AlignSettings(**{**base, **kw})


def numerical_rank(m, rel=1e-4):
    s = torch.linalg.svdvals(m.double())
    return int((s > rel * s.max()).sum())


def test_woodbury_cayley_equals_the_dense_solve():
    g = torch.Generator().manual_seed(0)
    n, d, k = 3, 9, 2
    a, b = (torch.randn(n, d, k, generator=g, dtype=torch.float64) for _ in range(2))
    s = a @ b.mT - b @ a.mT
    eye = torch.eye(d, dtype=torch.float64)
    dense = torch.linalg.solve((eye + s).mT, (eye - s).mT).mT  # (I - S)(I + S)^-1, solved from the right
    assert torch.allclose(cayley_lowrank(a, b), dense, atol=1e-12)
    base = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=torch.float64))[0]
    assert torch.allclose(cayley_lowrank(a, b, base), base @ dense, atol=1e-12)
    v = torch.randn(n, d, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(cayley_lowrank_apply(a, b, v), dense @ v, atol=1e-12)
    c = cayley_lowrank(a, b)
    assert torch.allclose(c.mT @ c, eye.expand(n, d, d), atol=1e-12) and numerical_rank(c[0] - eye) <= 2 * k

    # the gradient through the 2k x 2k solve equals autograd through the dense one
    fa, fb = a.clone().requires_grad_(), b.clone().requires_grad_()
    sa, sb = a.clone().requires_grad_(), b.clone().requires_grad_()
    w = torch.randn(n, d, d, generator=g, dtype=torch.float64)
    (cayley_lowrank(fa, fb) * w).sum().backward()
    ss = sa @ sb.mT - sb @ sa.mT
    (torch.linalg.solve((eye + ss).mT, (eye - ss).mT).mT * w).sum().backward()
    assert torch.allclose(fa.grad, sa.grad, atol=1e-10) and torch.allclose(fb.grad, sb.grad, atol=1e-10)


def test_cayley_retraction_of_a_tall_point_equals_geoopts_own():
    g = torch.Generator().manual_seed(1)
    x = torch.linalg.qr(torch.randn(4, 10, 3, generator=g))[0]
    u, v = 0.1 * torch.randn(4, 10, 3, generator=g), torch.randn(4, 10, 3, generator=g)
    for fast, slow in zip(CayleyStiefel().retr_transp(x, u, v), geoopt.CanonicalStiefel().retr_transp(x, u, v)):
        assert_rounding_close(fast, slow, terms=8 * 10, scale=2 * torch.linalg.matrix_norm(v, ord=2).max())


def test_a_rotation_of_a_subspace_is_orthogonal():
    g = torch.Generator().manual_seed(2)
    d, k = 7, 3
    q = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0]
    r = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))[0]  # any orthogonal R, det -1 too
    u = torch.eye(d, dtype=torch.float64) + q @ (r - torch.eye(k, dtype=torch.float64)) @ q.T
    assert torch.allclose(u.T @ u, torch.eye(d, dtype=torch.float64), atol=1e-12)
    assert numerical_rank(u - torch.eye(d, dtype=torch.float64)) <= k


@pytest.mark.parametrize("method", TRAINED)
def test_each_strategy_starts_at_u0_and_moves_inside_the_rank_k_family(method, tmp_path):
    torch.manual_seed(0)
    init = torch.eye(8).expand(2, 8, 8).clone()
    start = STRATEGIES[method]().parameterise(init, settings(method))
    with torch.no_grad():
        assert torch.allclose(start(), init, atol=1e-6)
    assert all(p.shape[-1] == K for p in start.parameters())  # (n, d, k) or (n, k, k): never a d x d parameter

    source, target, u, tv, task = planted()
    al = align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings(method), Run(tmp_path / method))
    metrics = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 20
    if method != "penalty":
        assert max(m["orth_error"] for m in metrics) < 1e-4
    assert al.meta["settings"]["rotation_rank"] == K
    for site, m in al.matrices().items():
        moved = m - torch.eye(8)
        assert moved.norm() > 1e-3, site
        assert numerical_rank(moved) <= MAX_RANK[method], site


@pytest.mark.parametrize("method", TRAINED)
def test_a_low_rank_alignment_from_the_identity_is_stored_as_its_factors(method, tmp_path):
    from orthoxfer.alignment.artifact import LowRankU, rotate

    source, target, _, tv, task = planted()
    problem = AlignProblem(target, {"toy": tv}, {"toy": task}, source)
    al = align(problem, settings(method, log_every=0))
    assert all(
        isinstance(u, LowRankU) and u.left.shape == (8, MAX_RANK[method]) for u in al.transforms["joint"].values()
    )
    al.save(tmp_path / "a.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not any(n.startswith("u/") for n in names)  # no d x d tensor on disk
    loaded = Alignment.load(tmp_path / "a.safetensors")
    stored, back = al.transforms["joint"], loaded.transforms["joint"]
    for key, u in stored.items():  # the file keeps the factors bit for bit
        assert torch.equal(back[key].left, u.left) and torch.equal(back[key].right, u.right)
    for site, u in al.matrices().items():
        # I + L R^T rebuilt from loaded tensors: a BLAS may round differently with another memory alignment
        factors = stored[al.keys[site]]
        assert_rounding_close(
            loaded.matrices()[site], u, terms=MAX_RANK[method], scale=1 + factors.left.norm() * factors.right.norm()
        )
        if method != "penalty":
            assert_rounding_close(u.T @ u, torch.eye(8), terms=8 * 8, scale=4.0)
    for s in tv.sites:
        assert_norm_close(loaded.apply(tv).delta(s), rotate(tv, al.matrices()).delta(s), terms=4 * 8)
    started = align(problem, settings(method, log_every=0, init="procrustes"))  # from a full U0: stored in full
    assert all(isinstance(u, torch.Tensor) for u in started.transforms["joint"].values())


def test_a_low_rank_family_starts_at_a_non_identity_u0_too():
    torch.manual_seed(0)
    u0 = torch.linalg.qr(torch.randn(2, 8, 8))[0]
    for method in TRAINED:
        module = STRATEGIES[method]().parameterise(u0, settings(method))
        with torch.no_grad():
            assert torch.allclose(module(), u0, atol=1e-6), method


def test_tie_block_shares_one_low_rank_family_per_block(tiny):
    g = torch.Generator().manual_seed(4)
    sites = find_sites(tiny, "attn")
    groups = group_sites(sites, "block")
    assert len(groups[0].keys) == 2 and len(sites) == 8
    tv = TaskVector({s.name: 0.1 * torch.randn(32, 32, generator=g) for s in sites})
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
    head = torch.nn.Linear(16, 4).requires_grad_(False)
    for method in TRAINED:
        torch.manual_seed(0)
        s = AlignSettings(
            method=method, lr=1e-2, warmup=0, log_every=0, checkpoint_every=0, rotation_rank=K, tie="block"
        )
        step = AlignStep(
            STRATEGIES[method](), ScopedProblem("joint", tiny, tv, {}, sites), groups, identity_stacks(groups), s
        )
        assert all(p.shape[0] == 2 for p in step.module.parameters())  # one family per block
        for _ in range(2):
            step(x, y, head)
        with torch.no_grad():
            (stack,) = step.module()
        assert stack.shape == (2, 32, 32) and (stack - torch.eye(32)).abs().max() > 1e-4
        if method != "penalty":
            assert step.metrics()["orth_error"] < 1e-4


def test_settings_and_config_accept_rotation_rank(tmp_path):
    assert AlignSettings().rotation_rank == 0
    with pytest.raises(UsageError, match="--rotation-rank must be >= 0"):
        AlignSettings(rotation_rank=-1)
    cfg = tmp_path / "a.toml"
    cfg.write_text("[align]\nrotation_rank = 8\n")
    assert read_config(cfg, section="align") == {"rotation_rank": 8}
    source, target, u, tv, task = planted()
    with pytest.raises(UsageError, match="--rotation-rank 8 must be < 8"):
        align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings("cayley", rotation_rank=8))


def test_align_cli_records_rotation_rank_and_ties_by_block(align_setup):
    tmp_path, common, _ = align_setup
    out = tmp_path / "run"
    result = runner.invoke(
        app, [*common, "--method", "cayley", "--rotation-rank", "2", "--tie", "block", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    al = Alignment.load(out / "alignment.safetensors")
    assert (
        al.meta["settings"]["rotation_rank"] == 2
        and json.loads((out / "config.json").read_text())["rotation_rank"] == 2
    )
    us = al.matrices()
    assert len(al.transforms["joint"]) == 1 and len({id(m) for m in us.values()}) == 1  # one U for the block's 4 sites
    assert al.meta["diagnostics"]["joint"]["orth_error_max"] < 1e-4
    diag = runner.invoke(
        app,
        [
            "diagnose",
            "--task-vector",
            str(tmp_path / "tv.safetensors"),
            "--alignment",
            str(out / "alignment.safetensors"),
            "--json",
        ],
    )
    assert diag.exit_code == 0, diag.output  # from the stored factors
    assert json.loads(diag.output)["aggregate"]["orth_error_max"] < 1e-4


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "procrustes", "--rotation-rank", "2"], "procrustes is closed form"),
        (["--method", "cayley", "--rotation-rank", "32"], "--rotation-rank 32 must be < 32"),
        (["--rotation-rank", "-1"], "--rotation-rank must be >= 0"),
    ],
)
def test_align_cli_refuses_bad_rotation_ranks_in_one_line(align_setup, extra, message):
    tmp_path, common, _ = align_setup
    result = runner.invoke(app, [*common, *extra, "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_bench_cli_passes_rotation_rank_to_the_align_settings(tmp_path, monkeypatch):
    import orthoxfer.experiments.bench_run
    import orthoxfer.suites

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_bench(inputs, bench, run, seeds, progress):
        seen["align"] = bench.align
        raise Stop

    monkeypatch.setattr(orthoxfer.suites, "build_suite", lambda *args: SimpleNamespace(tasks=[], relate_images=None))
    monkeypatch.setattr(orthoxfer.experiments.bench_run, "run_bench", fake_run_bench)
    result = runner.invoke(
        app, ["bench", "--suite", "mini", "--rotation-rank", "4", "--device", "cpu", "--out", str(tmp_path / "b")]
    )
    assert isinstance(result.exception, Stop), result.output
    assert seen["align"].rotation_rank == 4
    assert json.loads((tmp_path / "b" / "config.json").read_text())["align"]["rotation_rank"] == 4
