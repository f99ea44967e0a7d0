"""theseus and two-sided transforms: a planted permutation recovered from activations, on attention and MLP sites."""

import copy
import math

import pytest
import torch
from torch import nn

from orthoxfer.alignment.align import align
from orthoxfer.alignment.artifact import rotate
from orthoxfer.errors import UsageError
from orthoxfer.models.planted import planted_target
from orthoxfer.models.small import small_clip
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.transfers.registry import TRANSFERS, method_needs, transfer_settings
from orthoxfer.transfers.theseus import Moments
from orthoxfer.vectors.sites import find_sites, read_site
from orthoxfer.vectors.taskvector import TaskVector

FC, PROJ = "visual.transformer.resblocks.{}.mlp.c_fc.weight", "visual.transformer.resblocks.{}.mlp.c_proj.weight"


def perturbed(model: nn.Module, seed: int, size: float) -> nn.Module:
    """``model`` plus Gaussian noise on every parameter: non-zero biases and LayerNorm shifts, as trained weights have."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return model


def identifiable_source() -> nn.Module:
    """A tiny CLIP on whose activations every cross-covariance has full numerical rank (above theseus' 1e-6).

    A LayerNorm output has a direction it only reaches through its bias, and a random
    square weight has a condition number of order d, squared in a cross-covariance: so
    the LayerNorm biases get a clear shift and the attention weights are orthogonal.
    """
    source = perturbed(small_clip(seed=0), seed=1, size=0.1)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in source.visual.named_parameters():
            if "ln_" in name and name.endswith("bias"):
                p.add_(0.5)
        for site in find_sites(source, "attn"):
            read_site(source, site).copy_(torch.linalg.qr(torch.randn(32, 32, generator=g))[0])
    return source


def image_pool(n: int = 48, seed: int = 0) -> FewShotTask:
    """Random images (n x 17 tokens: more than the MLP's 128 hidden units)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    return FewShotTask("toy", images, torch.zeros(n, dtype=torch.int64), nn.Linear(16, 1))


@pytest.fixture(scope="module")
def planted():
    """A source, its planted target, the residual permutation, each block's hidden permutation, a full vector."""
    source = identifiable_source()
    target, u_star = planted_target(source, seed=3)
    perm = next(iter(u_star.values())).T.argmax(1)  # U* = P^T, P = I[perm]
    hidden = []
    for b in range(2):  # the target's c_fc bias is the source's, indexed by the block's hidden permutation
        bias = f"visual.transformer.resblocks.{b}.mlp.c_fc.bias"
        hidden.append((target.get_parameter(bias)[:, None] == source.get_parameter(bias)[None, :]).float().argmax(1))
    tuned = perturbed(copy.deepcopy(source), seed=2, size=0.01)
    vector = TaskVector.from_models(source, tuned, "attn,mlp", full=True)
    return source, target, u_star, perm, hidden, vector


@pytest.mark.numerics
def test_theseus_recovers_a_planted_permutation_on_attention_and_mlp_sites(planted):
    source, target, u_star, perm, hidden, vector = planted
    assert (
        len(vector.sites) == 12 and vector.extra
    )  # 8 attention and 4 MLP sites, and the other parameters of a full vector
    out = TRANSFERS["theseus"]().transfer(vector, source, target, {"toy": image_pool()}, transfer_settings({}))
    p_t, eye = next(iter(u_star.values())), torch.eye(128)
    expected = dict.fromkeys(u_star, (p_t, p_t))  # attention: U_in = U_out = U* = P^T
    for b, h in enumerate(hidden):  # the MLP: P^T on the residual side, the block's H^T (H = I[hidden]) on its units
        expected[FC.format(b)] = (p_t, eye[h].T)
        expected[PROJ.format(b)] = (eye[h].T, p_t)
    assert set(expected) == set(vector.sites)
    for site, (u_in, u_out) in expected.items():
        torch.testing.assert_close(out.learnt[f"in/{site}"], u_in, rtol=0, atol=1e-5, msg=site)
        torch.testing.assert_close(out.learnt[f"out/{site}"], u_out, rtol=0, atol=1e-5, msg=site)
    for site in vector.sites:  # the source's vector relabelled as planted.py relabels the weights
        dw, block = vector.delta(site), int(site.split(".")[3])
        rows = hidden[block] if "c_fc" in site else perm
        cols = hidden[block] if "c_proj" in site else perm
        torch.testing.assert_close(out.vector.delta(site), dw[rows][:, cols], rtol=0, atol=1e-5 * float(dw.abs().max()))
    assert all(
        torch.equal(out.vector.extra[n], t) for n, t in vector.extra.items()
    )  # added unchanged, as alignments do
    assert abs(out.diagnostics["norm_ratio"] - 1) < 1e-5 and out.diagnostics["dist_identity_mean"] > 1


def test_centring_subtracts_each_models_mean_from_the_cross_covariance():
    g = torch.Generator().manual_seed(0)
    xt, xs = torch.randn(50, 6, generator=g) + 3, torch.randn(50, 4, generator=g) - 1
    moments = Moments()
    for a, b in zip(xt.split(16), xs.split(16)):
        moments.add(a, b)
    xt64, xs64 = xt.double(), xs.double()
    torch.testing.assert_close(moments.matrix(False), xt64.T @ xs64)
    torch.testing.assert_close(moments.matrix(True), (xt64 - xt64.mean(0)).T @ (xs64 - xs64.mean(0)))


@pytest.mark.numerics
def test_theseus_result_computes_the_fine_tuned_source_on_the_planted_target(planted):
    """The two-sided convention end to end: target + carried sites = source + its sites, feature for feature."""
    source, target, _, _, _, vector = planted
    sites_only = TaskVector(dict(vector.dense))
    out = TRANSFERS["theseus"]().transfer(sites_only, source, target, {"toy": image_pool()}, transfer_settings({}))
    images = image_pool(4, seed=9).batch(torch.arange(4), augment=False)[0]
    want = sites_only.added_to_copy(source).encode_image(images)
    got = out.vector.added_to_copy(target).encode_image(images)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert not torch.allclose(
        sites_only.added_to_copy(target).encode_image(images), want, atol=1e-3
    )  # direct addition does not


def test_a_two_sided_transform_on_an_mlp_site_equals_a_direct_computation():
    site = FC.format(0)
    g = torch.Generator().manual_seed(0)
    u_in, u_out = (torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0] for n in (32, 128))
    dw = torch.randn(128, 32, generator=g, dtype=torch.float64)
    carried = rotate(TaskVector({site: dw}), {site: u_in}, {site: u_out}).dense[site]
    direct = torch.zeros(128, 32, dtype=torch.float64)
    for a in range(128):  # (U_out^T dW U_in)[a, b] = sum_ij U_out[i, a] dW[i, j] U_in[j, b]
        direct[a] = (u_out[:, a, None] * dw).sum(0) @ u_in
    torch.testing.assert_close(carried, direct, rtol=0, atol=1e-12)
    a, b = torch.randn(4, 32, generator=g, dtype=torch.float64), torch.randn(128, 4, generator=g, dtype=torch.float64)
    lora = rotate(TaskVector(lora={site: (a, b)}, scale=0.5), {site: u_in}, {site: u_out})
    assert lora.kind == "lora" and lora.shape(site) == (128, 32)
    torch.testing.assert_close(lora.delta(site), u_out.T @ (0.5 * b @ a) @ u_in, rtol=0, atol=1e-12)
    square = "visual.transformer.resblocks.0.attn.q"
    dq = torch.randn(32, 32, generator=g, dtype=torch.float64)
    torch.testing.assert_close(rotate(TaskVector({square: dq}), {square: u_in}).dense[square], u_in.T @ dq @ u_in)


def test_rectangular_sites_are_refused_in_one_line_by_methods_with_one_u_per_site(planted):
    source, target, _, _, _, vector = planted
    problem = AlignProblem(target, {"toy": vector}, {"toy": image_pool(4)}, source)
    with pytest.raises(
        UsageError, match=r"^procrustes carries square sites only, and site '.*c_fc.weight' is 128 x 32: "
    ):
        align(problem, AlignSettings(method="procrustes"))
    assert TRANSFERS["theseus"].rectangular and not TRANSFERS["theseus"]().options[0].default  # centring off by default
    assert method_needs("theseus") == "images"
    with pytest.raises(UsageError, match=r"theseus needs the target's images"):
        TRANSFERS["theseus"]().transfer(vector, source, target, None, transfer_settings({}))
    with pytest.raises(UsageError, match="theseus needs the source model"):
        TRANSFERS["theseus"]().transfer(vector, None, target, {"toy": image_pool(4)}, transfer_settings({}))


def test_bench_runs_theseus_on_the_planted_suite_with_its_controls(micro_run):
    import json

    from typer.testing import CliRunner

    from orthoxfer.cli import app

    root, _, _ = micro_run
    out = root / "theseus"
    args = [
        "bench",
        "--config",
        str(root / "fast.toml"),
        "--suite",
        "planted",
        "--size",
        "micro",
        "--tasks",
        "mnist,coins",
        "--kinds",
        "embed",
        "--methods",
        "theseus",
        "--controls",
        "norm,spectrum",
        "--theseus-rtol",
        "1e-12",
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
    for label in ["embed, theseus", "embed, theseus [control: norm]", "embed, theseus [control: spectrum]"]:
        assert all(math.isfinite(v[0]) for v in summary[label]["accuracy"].values()), label
    row = summary["embed, theseus"]
    assert row["needs"] == "images" and set(row["transfer_gain"]) == {"norm", "spectrum"}
    # the planted U* from activations alone, both sides; the micro models' LayerNorm-fed outputs have directions at
    # 1e-9 of the largest singular value, which the default threshold (1e-6) would leave to the completion toward I
    assert row["recovery_error"] < 1e-4 and abs(row["norm_ratio"] - 1) < 1e-5
    record = json.loads((out / "rows" / "embed_theseus-seed0.json").read_text())
    assert record["transfer"] == {"theseus_centre": False, "theseus_rtol": 1e-12}
    assert "‖U−U*‖" in (out / "results.csv").read_text().splitlines()[0]
