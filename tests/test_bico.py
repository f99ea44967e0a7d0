"""bico: a planted permutation recovered from activations (input side) and gradients (output side), MLP sites included."""

import pytest
import torch
from test_theseus import FC, PROJ, image_pool, planted  # noqa: F401 - planted is a fixture

from orthoxfer.errors import UsageError
from orthoxfer.transfers.bico import weight_gradients
from orthoxfer.transfers.registry import TRANSFERS, method_needs, transfer_settings
from orthoxfer.vectors.taskvector import TaskVector


@pytest.mark.numerics
def test_bico_recovers_a_planted_permutation_on_attention_and_mlp_sites(planted):  # noqa: F811
    source, target, u_star, perm, hidden, vector = planted
    settings = transfer_settings({"bico_rtol": 1e-12})
    out = TRANSFERS["bico"]().transfer(vector, source, target, {"toy": image_pool()}, settings)
    p_t, eye = next(iter(u_star.values())), torch.eye(128)
    expected = dict.fromkeys(u_star, (p_t, p_t))
    for b, h in enumerate(hidden):  # the MLP's units: its own permutation H^T, output side of c_fc, input of c_proj
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
        torch.testing.assert_close(out.vector.delta(site), dw[rows][:, cols], rtol=0, atol=1e-4 * float(dw.abs().max()))
    assert all(torch.equal(out.vector.extra[n], t) for n, t in vector.extra.items())
    assert abs(out.diagnostics["norm_ratio"] - 1) < 1e-5 and out.diagnostics["backward_passes"] == 2 * 6
    # the data decided every input map; on the output side each of the 4 sites writing into the residual stream
    # (out, c_proj) leaves one direction free: LayerNorm takes the mean away, so no gradient has a part along 1
    assert out.diagnostics["identified_in"] == 1.0 and out.diagnostics["identified_out"] == pytest.approx(572 / 576)


def test_weight_gradients_relabel_as_the_planted_weights_do(planted):  # noqa: F811
    """The identity the output maps rest on: G_T = U_out^T G_S U_in for a function-preserving relabelling."""
    source, target, u_star, perm, _, vector = planted
    sites = vector.check_fits(target)
    images = image_pool(4, seed=3).batch(torch.arange(4), augment=False)[0]
    target.requires_grad_(False)
    gt, gs = weight_gradients(target, sites, images), weight_gradients(source, sites, images)
    site = next(iter(u_star))
    torch.testing.assert_close(gt[site], gs[site][perm][:, perm], rtol=1e-4, atol=1e-6)
    assert not any(p.requires_grad for p in target.parameters())  # frozen stays frozen: flags restored
    target.requires_grad_(True)


def test_bico_declares_images_and_refuses_what_it_lacks(planted):  # noqa: F811
    source, target, _, _, _, vector = planted
    assert method_needs("bico") == "images" and TRANSFERS["bico"].rectangular
    with pytest.raises(UsageError, match="bico needs the target's images"):
        TRANSFERS["bico"]().transfer(vector, source, target, None, transfer_settings({}))
    with pytest.raises(UsageError, match="bico needs the source model"):
        TRANSFERS["bico"]().transfer(vector, None, target, {"toy": image_pool(4)}, transfer_settings({}))
    lora = TaskVector(
        lora={s: (torch.randn(2, vector.shape(s)[1]), torch.randn(vector.shape(s)[0], 2)) for s in vector.sites}
    )
    out = TRANSFERS["bico"]().transfer(lora, source, target, {"toy": image_pool(16)}, transfer_settings({}))
    assert out.vector.kind == "lora"  # factors carried, not multiplied out
    assert out.diagnostics["identified_out"] < 1  # 16 images in two gradient batches cannot pin the MLP's 128 units


def test_bench_runs_bico_on_the_planted_suite_with_a_control(tmp_path):
    import json
    import math

    from typer.testing import CliRunner

    from orthoxfer.cli import app

    (tmp_path / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")
    args = ["bench", "--config", str(tmp_path / "fast.toml"), "--suite", "planted", "--size", "micro"]
    args += ["--tasks", "mnist,coins", "--kinds", "embed", "--methods", "bico", "--controls", "norm"]
    args += ["--bico-rtol", "1e-12", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = {e["label"]: e for e in json.loads((tmp_path / "run" / "results.json").read_text())["summary"]}
    for label in ["embed, bico", "embed, bico [control: norm]"]:
        assert all(math.isfinite(v[0]) for v in summary[label]["accuracy"].values()), label
    row = summary["embed, bico"]
    assert row["needs"] == "images" and set(row["transfer_gain"]) == {"norm"}
    assert row["recovery_error"] < 1e-4 and abs(row["norm_ratio"] - 1) < 1e-5  # the planted U* from the data alone
