import pytest
import torch
from tiny import TINY_ARCH, TINY_CONFIG
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.models.loading import register_arch
from orthoxfer.models.small import small_clip

torch.set_num_threads(2)


@pytest.fixture
def tiny():
    """A tiny open_clip CLIP (real classes, random weights)."""
    return small_clip(seed=0)


@pytest.fixture
def tiny_pair():
    """A base model and a 'fine-tuned' copy that differs on every parameter."""
    base = small_clip(seed=0)
    tuned = small_clip(seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return base, tuned


@pytest.fixture(scope="session")
def tiny_arch():
    """An open_clip arch name for a tiny config, loadable as `orthoxfer-test-tiny:none` or `:/path`."""
    register_arch(TINY_ARCH, TINY_CONFIG)
    return TINY_ARCH


@pytest.fixture
def eurosat_run(tmp_path, tiny_arch):
    """A generated EuroSAT tree, a source checkpoint and a task vector for the tiny target, and CLI flags naming them."""
    from safetensors.torch import save_file
    from test_data_paper import make_eurosat

    from orthoxfer.models.loading import load_model
    from orthoxfer.vectors.sites import find_sites
    from orthoxfer.vectors.taskvector import TaskVector

    make_eurosat(tmp_path / "data", per_class=8)
    save_file(small_clip(seed=7, layers=1).state_dict(), str(tmp_path / "source.safetensors"))
    target = load_model(f"{tiny_arch}:none").model
    g = torch.Generator().manual_seed(0)
    tv = TaskVector(
        {s.name: 0.05 * torch.randn(32, 32, generator=g) for s in find_sites(target, "attn")},
        meta={"tasks": ["eurosat"]},
    )
    tv.save(tmp_path / "tv.safetensors")
    flags = [
        "--target",
        f"{tiny_arch}:none",
        "--data-root",
        str(tmp_path / "data"),
        "--heads-dir",
        str(tmp_path / "heads"),
        "--device",
        "cpu",
    ]
    return tmp_path, flags, tv


@pytest.fixture
def align_setup(eurosat_run):
    """``orthoxfer align`` arguments for a 3-step run on :func:`eurosat_run` (method and --out still to add)."""
    tmp_path, flags, tv = eurosat_run
    common = [
        "align",
        *flags[:2],
        "--task-vector",
        str(tmp_path / "tv.safetensors"),
        *flags[2:],
        "--shots",
        "6",
        "--batch-size",
        "4",
        "--steps",
        "3",
    ]
    return tmp_path, common, tv


@pytest.fixture
def compiled(monkeypatch):
    """torch.compile with its eager backend (graph capture without a C compiler).

    Lists one call count per function compiled, so a test can tell a compiled function
    that runs from one that is compiled and then bypassed.
    """
    calls: list[int] = []
    real_compile = torch.compile

    def eager_compile(fn, **kwargs):
        graph = real_compile(fn, backend="eager")
        index = len(calls)
        calls.append(0)

        def counted(*args, **kw):
            calls[index] += 1
            return graph(*args, **kw)

        return counted

    monkeypatch.setattr(torch, "compile", eager_compile)
    return calls


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    """A micro bench run (module-scoped: each test module that uses it builds its own, sharing nothing)."""
    root = tmp_path_factory.mktemp("bench")
    (root / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")  # source vectors in seconds
    args = [
        "bench",
        "--config",
        str(root / "fast.toml"),
        "--suite",
        "mini",
        "--size",
        "micro",
        "--steps",
        "2",
        "--tasks",
        "mnist,coins",
        "--methods",
        "penalty,procrustes",
        "--controls",
        "norm",
        "--out",
        str(root / "run"),
        "--cache-dir",
        str(root / "cache"),
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, args, result
