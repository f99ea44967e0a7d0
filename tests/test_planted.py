"""The positive control: a planted, function-preserving permutation the strategies should undo."""

import json

import pytest
import torch
from test_train import colour_task
from typer.testing import CliRunner

from orthoxfer.alignment.align import align
from orthoxfer.cli import app
from orthoxfer.models.planted import planted_target, recovery_error
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.problem.tasks import image_features
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.vectors.sites import find_sites, read_site
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


@pytest.mark.numerics
def test_planted_target_computes_the_same_function(tiny):
    target, u_star = planted_target(tiny.eval(), seed=3)
    images = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(image_features(tiny, images), image_features(target.eval(), images), atol=1e-5)
    for site in find_sites(tiny, "attn"):
        u, source, moved = u_star[site.name], read_site(tiny, site), read_site(target, site)
        assert torch.equal(u.T @ u, torch.eye(site.dim))
        assert torch.allclose(u.T @ source @ u, moved) and not torch.allclose(source, moved)
    assert not torch.equal(
        tiny.visual.transformer.resblocks[0].mlp.c_fc.weight, target.visual.transformer.resblocks[0].mlp.c_fc.weight
    )


@pytest.mark.numerics
def test_procrustes_recovers_the_planted_permutation(tiny):
    target, u_star = planted_target(tiny.eval(), seed=1)
    g = torch.Generator().manual_seed(0)
    tv = TaskVector({s.name: 0.1 * torch.randn(s.dim, s.dim, generator=g) for s in find_sites(tiny, "attn")})
    task = colour_task(n=32)
    problem = AlignProblem(target, {"joint": tv}, {"colour": task}, source=tiny)
    alignment = align(problem, AlignSettings(method="procrustes", shots=32, augment=1, batch_size=32))
    assert recovery_error(alignment.matrices(), u_star) < 1e-4  # q/k/v: M is exactly rank-deficient (centred inputs)
    identity = {s: torch.eye(u.shape[0]) for s, u in u_star.items()}
    assert recovery_error(identity, u_star) > 1.0  # a permutation of 32 coordinates is far from I
    moved = alignment.apply(tv)
    for site in tv.sites:  # the transferred vector is the source's, relabelled
        assert torch.allclose(moved.delta(site), u_star[site].T @ tv.delta(site) @ u_star[site], atol=1e-4)


def test_planted_suite_reports_the_ceiling_and_recovery(micro_run):  # noqa: F811
    root, _, _ = micro_run
    args = [
        "bench",
        "--config",
        str(root / "fast.toml"),
        "--suite",
        "planted",
        "--size",
        "micro",
        "--steps",
        "2",
        "--tasks",
        "mnist",
        "--kinds",
        "embed",
        "--methods",
        "penalty,procrustes",
        "--no-procrustes-init",
        "--out",
        str(root / "planted"),
        "--cache-dir",
        str(root / "cache"),
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((root / "planted" / "results.json").read_text())
    by_label = {e["label"]: e for e in data["summary"]}
    assert "embed, U = U* (ceiling)" in by_label and data["meta"]["suite"] == "planted"
    assert by_label["embed, procrustes"]["recovery_error"] < 1e-3
    assert by_label["embed, penalty"]["recovery_error"] > 0.5  # two steps from I cannot find a permutation
    ceiling, proc = by_label["embed, U = U* (ceiling)"], by_label["embed, procrustes"]
    assert proc["accuracy"]["mean"][0] == pytest.approx(ceiling["accuracy"]["mean"][0], abs=0.02)
    assert "‖U−U*‖" in next(iter((root / "planted" / "results.csv").open()))
