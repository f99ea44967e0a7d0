"""The rivals as their reference code runs them: transfusion-reference, gradfix-pool and direct-residual."""

import copy
import json
from functools import partial

import pytest
import torch
from test_theseus import image_pool, perturbed
from test_transfers import random_vector
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.models.planted import planted_target
from orthoxfer.models.small import small_clip
from orthoxfer.models.tower_axes import permute_param, reference_axes
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.transfers.registry import TRANSFERS, method_needs, transfer_settings
from orthoxfer.transfers.weight_matching import head_distances
from orthoxfer.vectors.taskvector import TaskVector

BLOCK = "visual.transformer.resblocks.{}."
PROJ = BLOCK + "mlp.c_proj.weight"


def reference(vector, source, target, seed=0, **options):
    settings = transfer_settings(options, seed=seed)
    return TRANSFERS["transfusion-reference"]().transfer(vector, source, target, None, settings)


def perms_of(out) -> dict[str, torch.Tensor]:
    return {k.removeprefix("perm/"): p for k, p in out.learnt.items()}


def test_reference_axes_give_each_sub_layer_its_stream_and_one_head_space_to_q_k_v_and_out():
    axes = partial(reference_axes, depth=2)
    assert axes("conv1.weight") == ("residual/0",) and axes("positional_embedding") == (None, "residual/0")
    assert axes("transformer.resblocks.0.ln_1.weight") == ("residual/0",)
    assert axes("transformer.resblocks.0.attn.in_proj_weight") == (("heads/0",) * 3, "residual/0")
    assert axes("transformer.resblocks.0.attn.out_proj.weight") == ("residual/1", "heads/0")
    assert axes("transformer.resblocks.0.mlp.c_fc.weight") == ("hidden/0", "residual/1")
    assert axes("transformer.resblocks.0.mlp.c_proj.weight") == ("residual/2", "hidden/0")
    assert axes("transformer.resblocks.1.ln_2.bias") == ("residual/3",)
    assert axes("ln_post.weight") == ("residual/4",) and axes("proj") == ("residual/4",)
    g = torch.Generator().manual_seed(0)
    t, s = torch.rand(4, 3, 5, generator=g), torch.rand(4, 3, 5, generator=g)
    summed = sum(torch.cdist(t[m], s[m]) for m in range(4))  # the reference: per-matrix distances, summed
    torch.testing.assert_close(head_distances(t, s, "reference"), summed)
    concatenated = torch.cdist(t.transpose(0, 1).flatten(1), s.transpose(0, 1).flatten(1))
    torch.testing.assert_close(head_distances(t, s, "exact"), concatenated)


def test_reference_structure_matches_each_sub_layer_alone_and_shares_the_head_permutation():
    source = small_clip(seed=0)
    target = perturbed(small_clip(seed=1), seed=2, size=0.1)  # independently initialised: nothing to recover
    vector = random_vector(source, seed=3)
    out = reference(vector, source, target)
    perms = perms_of(out)
    assert set(perms) == {f"residual/{k}" for k in range(5)} | {f"{s}/{b}" for b in (0, 1) for s in ("heads", "hidden")}
    for space, p in perms.items():  # each a permutation of its own space
        assert torch.equal(p.sort().values, torch.arange(len(p))), space
    assert len({tuple(perms[f"residual/{k}"].tolist()) for k in range(5)}) > 1  # no shared residual permutation
    for b in (0, 1):  # heads onto heads: a head's 8 indices stay together
        assert all(len(set((perms[f"heads/{b}"][h * 8 : h * 8 + 8] // 8).tolist())) == 1 for h in range(4))
    heads, stream_in, stream_out = perms["heads/0"], perms["residual/0"], perms["residual/1"]
    for part in "qkv":  # one within-head permutation for q, k, v (rows) and out_proj (columns)
        site = BLOCK.format(0) + f"attn.{part}"
        torch.testing.assert_close(out.vector.dense[site], vector.dense[site][heads][:, stream_in])
    site = BLOCK.format(0) + "attn.out"
    torch.testing.assert_close(out.vector.dense[site], vector.dense[site][stream_out][:, heads])
    assert isinstance(out.diagnostics["converged"], bool) and out.diagnostics["rounds"] <= 100
    once = reference(vector, source, target, transfusion_reference_rounds=1)
    assert once.diagnostics["rounds"] == 1 and once.diagnostics["converged"] is False  # the first round moved some
    assert method_needs("transfusion-reference") == "none"
    assert [o.name for o in TRANSFERS["transfusion-reference"].options] == ["transfusion_reference_rounds"]


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_structure_recovers_the_planted_permutation_in_every_round_order(seed):
    source = small_clip(seed=0)
    target, u_star = planted_target(source, seed=seed)
    perm = next(iter(u_star.values())).T.argmax(dim=1)
    vector = random_vector(source, seed=2)
    naming = partial(reference_axes, depth=2)
    for order in (0, 1):  # the seed of the random layer order
        out = reference(vector, source, target, seed=order)
        perms = perms_of(out)
        for space in (k for k in perms if not k.startswith("hidden/")):
            assert torch.equal(perms[space], perm), space
        for name, p in source.visual.named_parameters():  # the source relabelled is the target, exactly
            assert torch.equal(permute_param(name, p.detach(), perms, naming), target.visual.get_parameter(name)), name
        for site, u in u_star.items():
            torch.testing.assert_close(out.vector.dense[site], u.T @ vector.dense[site] @ u)
        assert out.diagnostics["converged"] is True and out.diagnostics["moved_residual"] > 0.9


def pool_of(per_class: int, classes: int = 3, seed: int = 0) -> FewShotTask:
    g = torch.Generator().manual_seed(seed)
    n = per_class * classes
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    head = torch.nn.Linear(16, classes).requires_grad_(False)
    return FewShotTask("toy", images, torch.arange(classes).repeat(per_class), head)


@pytest.mark.parametrize(("vote", "passes"), [("majority", 15), ("mean", 1)])
def test_gradfix_pool_votes_with_every_image_of_the_pool(vote, passes):
    model, pool = small_clip(seed=0), pool_of(per_class=5)
    vector = random_vector(model, seed=1)
    pooled = TRANSFERS["gradfix-pool"]().transfer(
        vector, None, model, {"toy": pool}, transfer_settings({"gradfix_vote": vote})
    )
    assert pooled.diagnostics["backward_passes"] == passes  # one per image of the 15, or one for the mean
    all_shots = TRANSFERS["gradfix"]().transfer(
        vector, None, model, {"toy": pool}, transfer_settings({"gradfix_vote": vote, "gradfix_shots": 5})
    )
    assert pooled.learnt.keys() == all_shots.learnt.keys()
    assert all(torch.equal(pooled.learnt[k], all_shots.learnt[k]) for k in pooled.learnt)  # the same images voted
    two = TRANSFERS["gradfix"]().transfer(vector, None, model, {"toy": pool}, transfer_settings({"gradfix_vote": vote}))
    assert two.diagnostics["backward_passes"] == (6 if vote == "majority" else 1)  # the reference's 2 per class
    assert [o.name for o in TRANSFERS["gradfix-pool"].options] == ["gradfix_vote"]
    assert method_needs("gradfix-pool") == "labels"


def direct_residual(vector, source, target, pools, **options):
    return TRANSFERS["direct-residual"]().transfer(vector, source, target, pools, transfer_settings(options))


@pytest.mark.numerics
def test_direct_residual_reproduces_the_fine_tuned_effect_on_the_source_itself():
    source = perturbed(small_clip(seed=0), seed=1, size=0.1)
    target = copy.deepcopy(source)  # the target is the source: every boundary map is I
    g = torch.Generator().manual_seed(3)
    dw = 0.05 * torch.randn(32, 128, generator=g)
    vector = TaskVector({PROJ.format(1): dw})
    pool = image_pool(16)  # 16 x 17 tokens: more than the 128 inputs of c_proj
    out = direct_residual(
        vector, source, target, {"toy": pool}, direct_residual_components="c_proj", direct_residual_ridge=1e-8
    )
    assert set(out.vector.sites) == {PROJ.format(b) for b in (0, 1)} and len(out.vector.extra) == 2
    assert not out.vector.dense[PROJ.format(0)].any()  # block 0 was not fine-tuned: no effect to reproduce there
    torch.testing.assert_close(out.vector.dense[PROJ.format(1)], dw, rtol=0, atol=1e-5)  # the update itself
    images = pool.batch(torch.arange(16), augment=False)[0]
    with torch.no_grad():
        base, want = target.encode_image(images), vector.added_to_copy(source).encode_image(images)
        got = out.vector.added_to_copy(target).encode_image(images)
    assert float((got - want).norm() / (want - base).norm()) < 1e-4 and out.diagnostics["fit_residual"] < 1e-5
    for b in (0, 1):
        torch.testing.assert_close(out.learnt[f"boundary/{b}"], torch.eye(32), rtol=0, atol=1e-4)
    shrunk = direct_residual(vector, source, target, {"toy": pool}, direct_residual_components="c_proj")
    assert 0 < shrunk.diagnostics["fit_residual"] < 0.1  # the reference's ridge (0.01) shrinks the fit a little
    both = direct_residual(vector, source, target, {"toy": pool})  # the reference's default: out_proj and c_proj
    assert sorted(both.vector.sites) == sorted(
        [BLOCK.format(b) + "attn.out" for b in (0, 1)] + [PROJ.format(b) for b in (0, 1)]
    )
    assert method_needs("direct-residual") == "images" and TRANSFERS["direct-residual"].rectangular
    with pytest.raises(UsageError, match="direct-residual needs the target's images"):
        direct_residual(vector, source, target, None)
    with pytest.raises(UsageError, match="direct-residual needs the source model"):
        direct_residual(vector, None, target, {"toy": pool})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rivals")
    (root / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")  # source vectors in seconds
    return root


def test_bench_reports_each_reference_rival_as_its_own_row_with_controls(root):
    out = root / "bench"
    args = ["bench", "--config", str(root / "fast.toml"), "--suite", "planted", "--size", "micro", "--steps", "1"]
    args += ["--tasks", "mnist", "--kinds", "embed", "--controls", "norm", "--scales", "1", "--out", str(out)]
    args += ["--methods", "transfusion-reference,gradfix-pool,direct-residual", "--gradfix-vote", "mean"]
    args += ["--cache-dir", str(root / "cache"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = {e["label"]: e for e in json.loads((out / "results.json").read_text())["summary"]}
    for method in ("transfusion-reference", "gradfix-pool", "direct-residual"):
        assert f"embed, {method} [control: norm]" in summary and "norm" in summary[f"embed, {method}"]["transfer_gain"]
    reference_row, ceiling = summary["embed, transfusion-reference"], summary["embed, U = U* (ceiling)"]
    assert reference_row["accuracy"]["mean"][0] == pytest.approx(ceiling["accuracy"]["mean"][0], abs=1e-6)
    rows = out / "rows"
    record = json.loads((rows / "embed_transfusion-reference-seed0.json").read_text())
    assert record["transfer"] == {"transfusion_reference_rounds": 100} and record["diagnostics"]["converged"] is True
    pooled = json.loads((rows / "embed_gradfix-pool-seed0.json").read_text())
    assert pooled["transfer"] == {"gradfix_vote": "mean"} and pooled["needs"] == "labels"
    assert json.loads((rows / "embed_direct-residual-seed0.json").read_text())["needs"] == "images"


def test_transfer_command_runs_transfusion_reference_and_direct_residual(root):
    flags = ["--suite", "mini", "--size", "micro", "--cache-dir", str(root / "cache"), "--device", "cpu"]
    models = ["--source", "mini:a", "--target", "mini:b", "--task-vector", "mini:surfaces"]
    for method, extra in (
        ("transfusion-reference", ["--transfusion-reference-rounds", "50"]),
        ("direct-residual", ["--direct-residual-components", "c_proj"]),
    ):
        out = root / method
        result = CliRunner().invoke(app, ["transfer", *flags, *models, "--method", method, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        diagnostics = json.loads((out / "diagnostics.json").read_text())["surfaces"]
        config = json.loads((out / "config.json").read_text())
        assert TaskVector.load(out / "transferred.safetensors").meta["method"] == method
        if method == "transfusion-reference":
            assert config["transfer"]["transfusion_reference_rounds"] == 50 and "converged" in diagnostics
        else:
            assert config["transfer"]["direct_residual_components"] == "c_proj" and diagnostics["fit_residual"] < 1
