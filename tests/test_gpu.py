"""The CUDA path end to end, on a tiny model: skipped where no GPU is present (CI has none).

Run them on a GPU machine with ``python -m pytest tests/test_gpu.py``. What only a GPU
exercises: bf16 autocast with the rotation at bf16 (the vector stored in bf16, U and its
gradient in float32), the Cholesky route of the Cayley inverse, checkpoints written from
device tensors and resumed from mid-run, ``torch.compile`` with its real backend.
"""

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer.alignment.align import align
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.cli import app
from orthoxfer.cli.bench_speed import bench_speed_command
from orthoxfer.experiments.step_cost import METHODS
from orthoxfer.fit.align_step import AlignStep, StackedVector
from orthoxfer.problem.align_problem import AlignProblem, ScopedProblem, group_sites
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import Run
from orthoxfer.strategies import linalg
from orthoxfer.strategies.registry import STRATEGIES
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.strategies.trained import identity_stacks
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import TaskVector

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
runner = CliRunner()


def on_cuda(common: list[str]) -> list[str]:
    return [("cuda" if arg == "cpu" and common[i - 1] == "--device" else arg) for i, arg in enumerate(common)]


def test_cayley_inverse_on_cuda_takes_the_cholesky_route_and_equals_float64(monkeypatch):
    routed = []
    real = linalg.inverse_by_cholesky
    monkeypatch.setattr(linalg, "inverse_by_cholesky", lambda m: routed.append(m.device) or real(m))
    g = torch.Generator().manual_seed(0)
    a = 0.05 * torch.randn(6, 96, 96, generator=g, dtype=torch.float64)
    s = a - a.mT
    expected = torch.linalg.inv(torch.eye(96, dtype=torch.float64) + s)
    got = linalg.inverse_identity_plus_skew(s.float().cuda()).double().cpu()
    assert (got - expected).norm() / expected.norm() < 1e-5 and [d.type for d in routed] == ["cuda"]


def test_bf16_rotation_on_cuda_matches_float32_on_cpu(tiny):
    g = torch.Generator().manual_seed(1)
    sites = find_sites(tiny, "attn")
    (group,) = group_sites(sites, "site")
    tv = TaskVector({s.name: 0.1 * torch.randn(s.dim, s.dim, generator=g) for s in sites})
    problem = ScopedProblem("joint", tiny, tv, {}, sites)
    vec = StackedVector.build(problem, group, 1.0, torch.device("cpu"))
    u = torch.linalg.qr(torch.eye(group.dim) + 0.1 * torch.randn(len(sites), group.dim, group.dim, generator=g))[0]
    cpu = vec.rotated(u)
    cuda = StackedVector.build(problem, group, 1.0, torch.device("cuda")).to(torch.bfloat16).rotated(u.cuda())
    assert cuda.dtype == torch.bfloat16
    assert (cuda.float().cpu() - cpu).norm() / cpu.norm() < 1e-2
    settings = AlignSettings(method="cayley", device="cuda", log_every=0, checkpoint_every=0)
    step = AlignStep(STRATEGIES["cayley"](), problem, [group], identity_stacks([group]), settings)
    assert [v.dtype for v in step.vectors] == [torch.bfloat16]
    assert all(p.dtype == torch.float32 and p.is_cuda for p in step.module.parameters())


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("penalty", []),
        ("riemannian", ["--retraction", "qr"]),
        ("riemannian", ["--retraction", "cayley"]),
        ("cayley", []),
        ("procrustes", []),
        ("penalty", ["--rotation-rank", "2"]),
        ("cayley", ["--rotation-rank", "2"]),
    ],
)
def test_align_on_cuda_resumes_and_evaluates(align_setup, method, extra):
    tmp_path, common, _ = align_setup
    common = on_cuda(common)
    out = tmp_path / "run"
    source = ["--source", common[common.index("--target") + 1].replace(":none", f":{tmp_path / 'source.safetensors'}")]
    args = [*common, "--method", method, *extra, *(source if method == "procrustes" else []), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    al = Alignment.load(out / "alignment.safetensors")
    for u in al.matrices().values():
        assert torch.isfinite(u).all() and u.device.type == "cpu"  # saved from the device, loadable anywhere
        if method != "penalty":
            assert torch.linalg.matrix_norm(u.T @ u - torch.eye(u.shape[0])) < 1e-4
    if method != "procrustes":  # the checkpoint, written from device tensors, loads back onto them
        resumed = runner.invoke(app, [*args, "--resume"])
        assert resumed.exit_code == 0, resumed.output
        again = Alignment.load(out / "alignment.safetensors").matrices()
        assert all(torch.equal(again[k], u) for k, u in al.matrices().items())
    evaluated = runner.invoke(
        app,
        [
            "eval",
            "--model",
            common[common.index("--target") + 1],
            "--data-root",
            common[common.index("--data-root") + 1],
            "--tasks",
            "EuroSAT",
            "--heads-dir",
            str(tmp_path / "heads"),
            "--task-vector",
            str(out / "transferred.safetensors"),
            "--device",
            "cuda",
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert 0 <= json.loads((tmp_path / "eval" / "results.json").read_text())["accuracy"]["mean"] <= 1


@pytest.mark.parametrize(
    ("compile", "methods"), [(False, ",".join(METHODS)), (True, "floor,penalty,cayley,activation")]
)
def test_bench_speed_on_cuda_writes_every_row(tmp_path, compile, methods):
    bench_speed_command(
        arch="tiny",
        batch_size=8,
        steps=2,
        warmup=1,
        device="cuda",
        out=tmp_path,
        methods=methods,
        rotation_rank=0 if compile else 2,
        compile=compile,
    )
    report = json.loads((tmp_path / f"step_cost-cuda{'-compiled' if compile else ''}.json").read_text())
    assert {r["method"] for r in report["rows"]} >= set(methods.split(","))
    assert all(r["median_s"] > 0 and r["step_peak_mb"] is not None for r in report["rows"])


def test_baselines_on_cuda(eurosat_run):
    tmp_path, common, _ = eurosat_run
    common = on_cuda(common)
    vector = ["--task-vector", str(tmp_path / "tv.safetensors")]
    loop = ["--shots", "10", "--batch-size", "4", "--steps", "3"]
    for name, extra in [
        ("target", ["--tasks", "eurosat"]),
        ("direct", [*vector, "--shots", "10", "--scales", "0,1"]),
        ("fewshot-ft", ["--tasks", "eurosat", *loop]),
    ]:
        result = runner.invoke(app, ["baseline", name, *common, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, (name, result.output)
        assert 0 <= json.loads((tmp_path / name / "results.json").read_text())["accuracy"]["mean"] <= 1


def test_relate_on_cuda(eurosat_run, tiny_arch):
    tmp_path, _, _ = eurosat_run
    result = runner.invoke(
        app,
        [
            "relate",
            "--source",
            f"{tiny_arch}:{tmp_path / 'source.safetensors'}",
            "--target",
            f"{tiny_arch}:none",
            "--images",
            f"eurosat:{tmp_path / 'data'}",
            "--limit",
            "4",
            "--batch-size",
            "2",
            "--device",
            "cuda",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert all(0 <= layer["cka"] <= 1 + 1e-6 for layer in json.loads(result.output)["layers"])


def test_micro_bench_on_cuda(tmp_path):
    """The mini suite on the GPU: pre-training, source vectors, every strategy, controls, evaluation."""
    (tmp_path / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")
    result = runner.invoke(
        app,
        [
            "bench",
            "--config",
            str(tmp_path / "fast.toml"),
            "--suite",
            "mini",
            "--size",
            "micro",
            "--steps",
            "2",
            "--tasks",
            "mnist,coins",
            "--methods",
            "penalty,riemannian,cayley,procrustes",
            "--controls",
            "norm",
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--device",
            "cuda",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["summary"]
    assert all(0 <= r["accuracy"]["mean"][0] <= 1 for r in rows)


@pytest.mark.parametrize("method", ["penalty", "riemannian", "cayley"])
def test_interrupted_run_on_cuda_resumes_to_the_same_transforms(method, tmp_path):
    """Cut at step 25 (checkpoint at 20), resumed onto the GPU: the U's of an uninterrupted run, to float tolerance."""
    from planted import planted
    from test_resume import Interrupting

    source, target, _, tv, task = planted()
    settings = AlignSettings(
        method=method,
        sites="linear",
        steps=30,
        lr=2e-2,
        batch_size=16,
        augment=4,
        warmup=5,
        checkpoint_every=10,
        device="cuda",
    )
    whole = align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings, Run(tmp_path / "whole"))
    fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(FewShotTask)}
    with pytest.raises(KeyboardInterrupt):
        align(
            AlignProblem(target, {"toy": tv}, {"toy": Interrupting(**fields, fail_at=25)}, source),
            settings,
            Run(tmp_path / "cut"),
        )
    resumed = align(
        AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings, Run(tmp_path / "cut", resume=True)
    )
    for site in tv.sites:
        assert torch.allclose(resumed.matrices()[site], whole.matrices()[site], atol=1e-5)


def test_theseus_on_cuda_moves_the_models_there_and_restores_their_modes():
    from test_theseus import identifiable_source, image_pool, perturbed

    from orthoxfer.models.planted import planted_target
    from orthoxfer.transfers.registry import TRANSFERS, transfer_settings

    source = identifiable_source()
    target, _ = planted_target(source, seed=3)
    target.train()
    vector = TaskVector.from_models(source, perturbed(identifiable_source(), seed=2, size=0.01), "attn")
    out = TRANSFERS["theseus"]().transfer(
        vector, source, target, {"toy": image_pool()}, transfer_settings({}, device="cuda")
    )
    assert {p.device.type for m in (source, target) for p in m.parameters()} == {
        "cuda"
    }  # the run's device, as evaluate leaves them
    assert target.training and not source.training  # each in the mode it came in
    on_cpu = TRANSFERS["theseus"]().transfer(vector, source, target, {"toy": image_pool()}, transfer_settings({}))
    assert target.training and not source.training  # each in the mode it came in
    for name in vector.sites:
        torch.testing.assert_close(out.vector.delta(name).cpu(), on_cpu.vector.delta(name), rtol=1e-3, atol=1e-5)
