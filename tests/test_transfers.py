"""Transfer methods beside the strategies: gradfix's mask against a direct computation, orthogonal-shift's projection."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_modes import ModeSpy
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.models.small import small_clip
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.transfers.registry import TRANSFERS, check_method, method_needs, transfer_settings
from orthoxfer.vectors.sites import find_sites, read_site
from orthoxfer.vectors.taskvector import TaskVector

EXTRAS = ("visual.ln_post.weight", "visual.transformer.resblocks.0.mlp.c_fc.bias")


def random_vector(model: nn.Module, seed: int, lora: bool = False) -> TaskVector:
    """A vector on the attention sites and two non-site parameters (dense), or LoRA-factored sites."""
    g = torch.Generator().manual_seed(seed)
    sites = [s.name for s in find_sites(model, "attn")]
    if lora:
        return TaskVector(
            lora={s: (torch.randn(2, 32, generator=g), torch.randn(32, 2, generator=g)) for s in sites}, scale=0.5
        )
    extra = {n: torch.randn(model.get_parameter(n).shape, generator=g) for n in EXTRAS}
    return TaskVector({s: torch.randn(32, 32, generator=g) for s in sites}, extra=extra)


def two_per_class_pool(seed: int = 0) -> FewShotTask:
    """Exactly two images of each of three classes, so gradfix (2 shots) uses every image whatever it draws."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(16, 3).requires_grad_(False)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g)
    return FewShotTask("toy", images, torch.tensor([0, 0, 1, 1, 2, 2]), head)


def direct_signs(model: nn.Module, vector: TaskVector, pool: FewShotTask, vote: str) -> dict[str, torch.Tensor]:
    """sign(-g) per tensor from plain autograd on the model's own parameters, image by image."""
    model.requires_grad_(True)
    sites = {s.name: s for s in vector.check_fits(model)}
    per_sample = []
    for i in range(len(pool.labels)):
        model.zero_grad()
        x, y = pool.batch(torch.tensor([i]), augment=False)
        F.cross_entropy(pool.head(model.encode_image(x)), y).backward()
        grads = {n: model.get_parameter(s.param).grad[s.start : s.stop].clone() for n, s in sites.items()}
        grads.update({n: model.get_parameter(n).grad.clone() for n in vector.extra})
        per_sample.append(grads)
    if vote == "majority":
        return {n: torch.sign(sum(torch.sign(-g[n]) for g in per_sample)) for n in per_sample[0]}
    return {n: torch.sign(-sum(g[n] for g in per_sample)) for n in per_sample[0]}


@pytest.mark.parametrize("vote", ["majority", "mean"])
def test_gradfix_mask_equals_a_direct_per_parameter_computation(vote):
    model, pool = small_clip(seed=0).train(), two_per_class_pool()
    pool.head = ModeSpy(pool.head).train()
    vector = random_vector(model, seed=1)
    settings = transfer_settings({"gradfix_vote": vote, "gradfix_shots": 2})
    out = TRANSFERS["gradfix"]().transfer(vector, None, model, {"toy": pool}, settings)
    assert pool.head.modes and not any(pool.head.modes)  # the gradients in eval mode
    assert model.training and pool.head.training  # handed back in their own
    signs = direct_signs(small_clip(seed=0), vector, pool, vote)
    for name, sign in signs.items():
        tau = vector.dense.get(name, vector.extra.get(name))
        key = f"mask/{name}" if name in vector.dense else f"mask/extra/{name}"
        expected = torch.sign(tau) * sign > 0
        assert torch.equal(out.learnt[key], expected), name
        got = out.vector.dense[name] if name in vector.dense else out.vector.extra[name]
        assert torch.equal(got, tau * expected)
    kept = sum(int(m.sum()) for m in out.learnt.values()) / sum(m.numel() for m in out.learnt.values())
    assert out.diagnostics["kept_fraction"] == kept and 0.2 < kept < 0.8
    assert out.diagnostics["backward_passes"] == (6 if vote == "majority" else 1)


def test_gradfix_densifies_lora_and_draws_only_the_shots_asked_for():
    model, pool = small_clip(seed=0), two_per_class_pool()
    vector = random_vector(model, seed=2, lora=True)
    out = TRANSFERS["gradfix"]().transfer(vector, None, model, {"toy": pool}, transfer_settings({"gradfix_shots": 1}))
    assert out.vector.kind == "dense" and out.diagnostics["backward_passes"] == 3  # one image per class
    for site in vector.sites:
        kept = out.learnt[f"mask/{site}"]
        assert torch.equal(out.vector.dense[site], vector.delta(site) * kept)
    with pytest.raises(UsageError, match="gradfix needs the target's labelled few-shot pools"):
        TRANSFERS["gradfix"]().transfer(vector, None, model, None, transfer_settings({}))


def test_orthogonal_shift_is_orthogonal_to_the_base_shift_per_tensor_and_keeps_unshifted_tensors():
    source, target = small_clip(seed=0), small_clip(seed=0)
    unshifted = find_sites(target, "attn")[0]  # q of the first block stays as in the source
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        read_site(target, unshifted).copy_(read_site(source, unshifted))
    vector = random_vector(source, seed=3)
    out = TRANSFERS["orthogonal-shift"]().transfer(vector, source, target, None, transfer_settings({}))
    for site in find_sites(target, "attn"):
        shift = (read_site(target, site) - read_site(source, site)).detach().double()
        result = out.vector.dense[site.name].double()
        if site == unshifted:
            assert torch.equal(out.vector.dense[site.name], vector.dense[site.name])
        else:
            assert abs(float((result * shift).sum())) < 1e-6 * float(result.norm() * shift.norm())
            assert not torch.equal(out.vector.dense[site.name], vector.dense[site.name])
    for name in EXTRAS:
        shift = (target.get_parameter(name) - source.get_parameter(name)).detach().double()
        result = out.vector.extra[name].double()
        assert abs(float((result * shift).sum())) < 1e-6 * float(shift.norm() * result.norm())
    assert out.diagnostics["cos_shift_mean"] < 1e-6 and 0 < out.diagnostics["norm_ratio"] <= 1
    with pytest.raises(UsageError, match="orthogonal-shift needs the source model"):
        TRANSFERS["orthogonal-shift"]().transfer(vector, None, target, None, transfer_settings({}))


def test_method_names_and_needs_are_checked_in_one_line():
    assert method_needs("gradfix") == "labels" and method_needs("orthogonal-shift") == "none"
    assert method_needs("penalty") == "labels" and method_needs("procrustes") == "images"
    with pytest.raises(UsageError, match="unknown method 'transfusionx'; strategies: penalty.*; transfers: gradfix"):
        check_method("transfusionx")
    with pytest.raises(UsageError, match="unknown gradfix-vote 'max'"):
        transfer_settings({"gradfix_vote": "max"})


def test_bench_runs_transfer_methods_as_rows_with_controls_and_a_held_out_lambda(micro_run):
    import json

    from typer.testing import CliRunner

    from orthoxfer.cli import app

    root, _, _ = micro_run
    out = root / "transfers"
    args = [
        "bench",
        "--config",
        str(root / "fast.toml"),
        "--steps",
        "2",
        "--suite",
        "mini",
        "--size",
        "micro",
        "--tasks",
        "mnist,coins",
        "--kinds",
        "embed",
        "--methods",
        "gradfix,orthogonal-shift",
        "--controls",
        "norm",
        "--gradfix-vote",
        "mean",
        "--out",
        str(out),
        "--cache-dir",
        str(root / "cache"),
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = {e["label"]: e for e in json.loads((out / "results.json").read_text())["summary"]}
    for label in [f"embed, {m}{c}" for m in ("gradfix", "orthogonal-shift") for c in ("", " [control: norm]")]:
        entry = summary[label]
        assert all(math.isfinite(v[0]) for v in entry["accuracy"].values()), label
        assert all(set(s) == {"mnist", "coins"} for s in entry["scale"])  # per-task: each task its own lambda
    assert summary["embed, gradfix"]["needs"] == "labels" and summary["embed, orthogonal-shift"]["needs"] == "none"
    assert 0 < summary["embed, gradfix"]["kept_fraction"] < 1 and summary["embed, orthogonal-shift"]["cos_shift"] < 1e-5
    assert "norm" in summary["embed, gradfix"]["transfer_gain"]
    record = json.loads((out / "rows" / "embed_gradfix-seed0.json").read_text())
    assert record["transfer"] == {"gradfix_shots": 2, "gradfix_vote": "mean"} and set(record["validation"]) == {
        "mnist",
        "coins",
    }
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "needs" in header and "kept" in header and "|cos s|" in header
    bad = CliRunner().invoke(app, [a if a != "gradfix,orthogonal-shift" else "gradfix,rebasin" for a in args])
    assert (
        bad.exit_code == 2 and "unknown method 'rebasin'; strategies:" in bad.output and "Traceback" not in bad.output
    )
