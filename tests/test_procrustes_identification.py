"""procrustes where the data leaves U free: a stated completion rule, the same on every CPU."""

import json

import pytest
import torch
from test_train import colour_task
from typer.testing import CliRunner

from orthoxfer.alignment.align import align
from orthoxfer.cli import app
from orthoxfer.evaluation.diagnostics import diagnose
from orthoxfer.models.planted import planted_target, recovery_error
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.strategies.procrustes import complete, polar_transform
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import TaskVector

pytestmark = pytest.mark.numerics  # also run under a second CPU kernel path (tests/test_kernel_paths.py)

runner = CliRunner()


def random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def odd_permutation(d: int, g: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(d, generator=g)
    p = torch.eye(d, dtype=torch.float64)[perm]
    if torch.linalg.det(p) > 0:
        p = p[[1, 0, *range(2, d)]]
    assert torch.linalg.det(p) < 0
    return p


def test_centred_inputs_and_an_odd_permutation_are_recovered():
    """Centred tokens make the all-ones direction an exact null of M; a permutation keeps it, and so must U."""
    g = torch.Generator().manual_seed(0)
    d = 16
    x_t = torch.randn(200, d, generator=g, dtype=torch.float64)
    x_t -= x_t.mean(1, keepdim=True)  # every token centred, as LayerNorm with unit gain and no bias leaves it
    u_star = odd_permutation(d, g)
    x_s = x_t @ u_star.T  # h_S = U* h_T
    fit = polar_transform((x_t.T @ x_s)[None])
    assert fit.rank == [d - 1] and fit.condition[0] > 1e12
    assert torch.linalg.matrix_norm(fit.transforms[0] - u_star) < 1e-4 * d**0.5
    assert torch.linalg.det(fit.transforms[0]) < 0


def null_space_case(d: int, r: int, g: torch.Generator):
    """``M = P_r S Q_r^T`` of rank r, with orthonormal bases P, Q of which only the first r columns are determined."""
    p, q = random_orthogonal(d, g), random_orthogonal(d, g)
    s = torch.cat([torch.linspace(3.0, 1.0, r, dtype=torch.float64), torch.zeros(d - r, dtype=torch.float64)])
    return p, q, p @ torch.diag(s) @ q.T


@pytest.mark.parametrize("start", ["identity", "random"])
def test_the_free_part_is_the_map_closest_to_the_start(start):
    g = torch.Generator().manual_seed(1)
    d, r = 12, 8
    p, q, m = null_space_case(d, r, g)
    u0 = torch.eye(d, dtype=torch.float64) if start == "identity" else random_orthogonal(d, g)
    u = polar_transform(m[None], start=None if start == "identity" else u0[None]).transforms[0]
    assert torch.allclose(u.T @ u, torch.eye(d, dtype=u.dtype), atol=1e-10)
    assert torch.allclose(u @ p[:, :r], q[:, :r], atol=1e-10)  # the data's part: U p_i = q_i
    p_n, q_n = p[:, r:], q[:, r:]
    a, _, bt = torch.linalg.svd(q_n.T @ u0 @ p_n)
    assert torch.allclose(u @ p_n, q_n @ (a @ bt), atol=1e-10)  # the rest: polar(Q_n^T U0 P_n), closest to U0
    # no other orthogonal completion is closer to the start
    for _ in range(5):
        other = q[:, :r] @ p[:, :r].T + q_n @ random_orthogonal(d - r, g) @ p_n.T
        assert torch.linalg.matrix_norm(u - u0) <= torch.linalg.matrix_norm(other - u0) + 1e-12


def test_the_completion_does_not_depend_on_the_null_space_basis():
    """Another LAPACK kernel may return any orthonormal basis of the null spaces: U must not change."""
    g = torch.Generator().manual_seed(2)
    d, r = 10, 6
    p, q, _ = null_space_case(d, r, g)
    free = torch.tensor([False] * r + [True] * (d - r))
    first = complete(p[None], q[None], free[None], None)[0]
    rot_p, rot_q = random_orthogonal(d - r, g), odd_permutation(d - r, g) @ random_orthogonal(d - r, g)
    p2, q2 = p.clone(), q.clone()
    p2[:, r:], q2[:, r:] = p[:, r:] @ rot_p, q[:, r:] @ rot_q
    second = complete(p2[None], q2[None], free[None], None)[0]
    assert torch.allclose(first, second, atol=1e-10)


def test_rtol_decides_what_counts_as_identified():
    g = torch.Generator().manual_seed(3)
    d = 8
    p, q = random_orthogonal(d, g), random_orthogonal(d, g)
    s = torch.tensor([1.0, 0.5, 0.2, 0.1, 1e-3, 1e-5, 1e-8, 0.0], dtype=torch.float64)
    m = (p @ torch.diag(s) @ q.T)[None]
    assert polar_transform(m).rank == [6]  # default 1e-6
    assert polar_transform(m, rtol=1e-4).rank == [5]
    assert polar_transform(m, rtol=0.0).rank == [8]  # 0 trusts every direction, rounding included: the bare SVD
    assert polar_transform(m).condition[0] > 1e15  # the zero singular value comes back as rounding
    assert polar_transform(torch.zeros(1, d, d, dtype=torch.float64)).rank == [0]  # no data: U is the start
    assert torch.allclose(
        polar_transform(torch.zeros(1, d, d, dtype=torch.float64)).transforms[0], torch.eye(d, dtype=torch.float64)
    )


@pytest.mark.parametrize("tie", ["site", "block"])
def test_planted_odd_permutation_through_align_records_identification(tiny, tie, tmp_path):
    """The tiny tower's q/k/v inputs are centred (LayerNorm gain 1, bias 0): M is exactly rank-deficient there."""
    target, u_star = planted_target(tiny.eval(), seed=0)
    assert all(torch.linalg.det(u) < 0 for u in u_star.values())
    g = torch.Generator().manual_seed(0)
    tv = TaskVector({s.name: 0.1 * torch.randn(s.dim, s.dim, generator=g) for s in find_sites(tiny, "attn")})
    problem = AlignProblem(target, {"joint": tv}, {"colour": colour_task(n=32)}, source=tiny)
    alignment = align(problem, AlignSettings(method="procrustes", shots=32, augment=1, batch_size=32, tie=tie))
    if tie == "site":
        assert recovery_error(alignment.matrices(), u_star) < 1e-4
    identification = alignment.meta["identification"]["joint"]
    d = tiny.visual.transformer.width
    qkv = [v for k, v in identification.items() if k.endswith((".q", ".k", ".v"))] if tie == "site" else []
    assert all(v["identified_rank"] == d - 1 and v["dim"] == d for v in qkv)
    report = diagnose(tv, alignment)
    assert report["aggregate"]["identified_rank_min"] == min(v["identified_rank"] for v in identification.values())
    assert report["aggregate"]["identified_rank_min"] == (d - 1 if tie == "site" else d)  # a block sums q, k, v and out
    alignment.save(tmp_path / "a.safetensors")
    tv.save(tmp_path / "tv.safetensors")
    result = runner.invoke(
        app,
        [
            "diagnose",
            "--task-vector",
            str(tmp_path / "tv.safetensors"),
            "--alignment",
            str(tmp_path / "a.safetensors"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["aggregate"]["identified_rank_min"] == report["aggregate"]["identified_rank_min"]
    shown = runner.invoke(
        app,
        ["diagnose", "--task-vector", str(tmp_path / "tv.safetensors"), "--alignment", str(tmp_path / "a.safetensors")],
        env={"COLUMNS": "250"},
    )
    assert "identified rank" in shown.output


def test_init_procrustes_records_identification(tiny):
    target, u_star = planted_target(tiny.eval(), seed=0)
    tv = TaskVector({s.name: 0.01 * torch.eye(s.dim) for s in find_sites(tiny, "attn")}, meta={"tasks": ["colour"]})
    problem = AlignProblem(target, {"colour": tv}, {"colour": colour_task(n=16)}, source=tiny)
    settings = AlignSettings(
        method="cayley", init="procrustes", shots=16, augment=1, batch_size=16, steps=1, lr=0.0, mode="per-task"
    )
    alignment = align(problem, settings)
    assert set(alignment.meta["identification"]) == {"colour"}
    assert alignment.meta["settings"]["procrustes_rtol"] == 1e-6
    assert recovery_error(alignment.matrices("colour"), u_star) < 1e-4
