"""transfusion: the planted permutation found from the weights alone, the vector relabelled by it, and its bench row."""

import json

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.models.planted import planted_target
from orthoxfer.models.small import small_clip
from orthoxfer.models.tower_axes import permute_param
from orthoxfer.transfers.registry import TRANSFERS, method_needs, transfer_settings
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import MismatchError, TaskVector

EXTRAS = (
    "visual.positional_embedding",
    "visual.ln_post.weight",
    "visual.proj",
    "visual.transformer.resblocks.0.attn.in_proj_bias",
    "visual.transformer.resblocks.1.mlp.c_fc.weight",
    "visual.transformer.resblocks.1.mlp.c_proj.weight",
)


def full_vector(model: torch.nn.Module, seed: int) -> TaskVector:
    """A random vector on every attention site and on parameters of every other kind of axis (``extra``)."""
    g = torch.Generator().manual_seed(seed)
    dense = {s.name: 0.1 * torch.randn(s.shape, generator=g) for s in find_sites(model, "attn")}
    return TaskVector(dense, extra={n: 0.1 * torch.randn(model.get_parameter(n).shape, generator=g) for n in EXTRAS})


def transfusion(vector, source, target, **options):
    return TRANSFERS["transfusion"]().transfer(vector, source, target, None, transfer_settings(options))


@pytest.mark.numerics
@pytest.mark.parametrize(("seed", "det"), [(0, -1), (1, 1)])  # seed 0 plants an odd permutation, seed 1 an even one
def test_transfusion_recovers_the_planted_permutation_and_relabels_the_vector(seed, det):
    source = small_clip(seed=0)
    target, u_star = planted_target(source, seed=seed)
    u = next(iter(u_star.values()))
    assert torch.linalg.det(u).item() == pytest.approx(det)
    perm = u.T.argmax(dim=1)  # U* = P^T with P = I[perm]
    vector = full_vector(source, seed=2)
    out = transfusion(vector, source, target)
    perms = {k.removeprefix("perm/"): p for k, p in out.learnt.items()}
    assert set(perms) == {"residual", *(f"{kind}/{b}" for b in (0, 1) for kind in ("qk", "vo", "hidden"))}
    for space in ("residual", "qk/0", "vo/0", "qk/1", "vo/1"):
        assert torch.equal(perms[space], perm), space
    for (
        name,
        p,
    ) in source.visual.named_parameters():  # the hidden units too: the source relabelled is the target, exactly
        assert torch.equal(permute_param(name, p.detach(), perms), target.visual.get_parameter(name)), name
    for site in vector.sites:  # attention sites: U*^T dW U*
        torch.testing.assert_close(out.vector.dense[site], u_star[site].T @ vector.dense[site] @ u_star[site])
    tuned = vector.added_to_copy(source)  # every tensor: the source's fine-tuned model relabelled, minus the target
    expected = TaskVector.from_models(target, planted_target(tuned, seed=seed)[0], sites="attn", full=True)
    for name in EXTRAS:
        torch.testing.assert_close(out.vector.extra[name], expected.extra[name])
    assert out.diagnostics["norm_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert out.diagnostics["moved_residual"] == float((perm != torch.arange(len(perm))).double().mean()) > 0.9
    assert (
        out.diagnostics["moved/hidden/1"] > 0.9 and out.diagnostics["rounds"] == 2
    )  # the first round was already exact


def test_transfusion_carries_rectangular_mlp_sites():
    source = small_clip(seed=0)
    target, _ = planted_target(source, seed=0)
    g = torch.Generator().manual_seed(4)
    vector = TaskVector({s.name: 0.1 * torch.randn(s.shape, generator=g) for s in find_sites(source, "mlp")})
    assert any(d.shape[0] != d.shape[1] for d in vector.dense.values())
    out = transfusion(vector, source, target)
    expected = TaskVector.from_models(target, planted_target(vector.added_to_copy(source), seed=0)[0], sites="mlp")
    assert out.vector.dense.keys() == expected.dense.keys()
    for site, delta in expected.dense.items():  # c_fc: hidden rows, residual columns; c_proj: the other way round
        torch.testing.assert_close(out.vector.dense[site], delta)


def test_transfusion_keeps_lora_factored_and_refuses_what_it_cannot_relabel():
    source = small_clip(seed=0)
    target, u_star = planted_target(source, seed=0)
    g = torch.Generator().manual_seed(3)
    lora = TaskVector(
        lora={s: (torch.randn(2, 32, generator=g), torch.randn(32, 2, generator=g)) for s in u_star}, scale=0.5
    )
    out = transfusion(lora, source, target, transfusion_rounds=1)
    assert out.vector.kind == "lora" and out.vector.rank == 2 and out.diagnostics["rounds"] == 1
    for site, u in u_star.items():
        torch.testing.assert_close(out.vector.delta(site), u.T @ lora.delta(site) @ u)
    assert method_needs("transfusion") == "none"
    with pytest.raises(UsageError, match="transfusion needs the source model"):
        transfusion(lora, None, target)
    text = TaskVector({"transformer.resblocks.0.attn.q": torch.zeros(32, 32)})  # the text tower is not matched
    with pytest.raises(UsageError, match="relabels the image tower only; the vector carries 'transformer.resblocks.0"):
        transfusion(text, source, target)
    with pytest.raises(MismatchError, match="target shape"):
        transfusion(lora, small_clip(seed=0, layers=1), target)
    with pytest.raises(UsageError, match="--transfusion-rounds must be >= 1"):
        transfer_settings({"transfusion_rounds": 0})


def test_bench_runs_transfusion_as_a_row_with_controls_at_the_planted_ceiling(micro_run):  # noqa: F811
    root, _, _ = micro_run
    out = root / "transfusion"
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
        "transfusion,orthogonal-shift",
        "--controls",
        "norm",
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
    row, control = summary["embed, transfusion"], summary["embed, transfusion [control: norm]"]
    assert row["needs"] == "none" and "norm" in row["transfer_gain"] and control["needs"] == "none"
    assert row["moved"] > 0.9 and row["norm_ratio"] == pytest.approx(1.0, abs=1e-9)
    ceiling = summary[
        "embed, U = U* (ceiling)"
    ]  # the planted permutation is found exactly: the ceiling's vector, relabelled
    assert row["accuracy"]["mean"][0] == pytest.approx(ceiling["accuracy"]["mean"][0], abs=1e-6)
    assert row["scale"] == ceiling["scale"]
    record = json.loads((out / "rows" / "embed_transfusion-seed0.json").read_text())
    assert record["transfer"] == {"transfusion_rounds": 20} and record["diagnostics"]["rounds"] == 2
    assert "moved" in (out / "results.csv").read_text().splitlines()[0]
