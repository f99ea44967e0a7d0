import copy

import pytest
import torch

from orthoxfer.artifacts import ArtifactError
from orthoxfer.errors import UsageError
from orthoxfer.models.small import small_clip
from orthoxfer.vectors.sites import find_sites, read_site
from orthoxfer.vectors.taskvector import MismatchError, TaskVector


def lora_vector(sites, rank=2, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    lora = {s: (torch.randn(rank, 32, generator=g), torch.randn(32, rank, generator=g)) for s in sites}
    return TaskVector(lora=lora, scale=scale, meta={"kind": "lora", "tasks": ["t"]})


def test_from_models_and_apply_roundtrip(tiny_pair):
    base, tuned = tiny_pair
    tv = TaskVector.from_models(base, tuned, "attn", meta={"tasks": ["mnist"]})
    assert tv.kind == "dense" and len(tv.sites) == 8 and not tv.extra
    target = copy.deepcopy(base)
    assert tv.apply_to(target) is target
    for s in find_sites(base, "attn"):
        assert torch.allclose(read_site(target, s), read_site(tuned, s), atol=1e-6)
    # parameters outside the sites are untouched by an `attn` vector
    assert torch.equal(target.visual.conv1.weight, base.visual.conv1.weight)


def test_full_vector_carries_and_applies_non_site_parameters(tiny_pair):
    base, tuned = tiny_pair
    tv = TaskVector.from_models(base, tuned, "attn-qkv", full=True)
    assert "visual.conv1.weight" in tv.extra
    assert "visual.transformer.resblocks.0.attn.out_proj.weight" in tv.extra
    target = tv.apply_to(copy.deepcopy(base))
    for name, p in tuned.named_parameters():
        assert torch.allclose(target.get_parameter(name), p, atol=1e-6), name


def test_arithmetic(tiny_pair):
    base, tuned = tiny_pair
    a = TaskVector.from_models(base, tuned, "attn", meta={"tasks": ["a"]})
    b = a * 0.5
    s = a + b
    assert all(torch.allclose(s.delta(k), 1.5 * a.delta(k)) for k in a.sites)
    d = a - b
    assert all(torch.allclose(d.delta(k), 0.5 * a.delta(k)) for k in a.sites)
    total = sum([a, b, a])
    assert all(torch.allclose(total.delta(k), 2.5 * a.delta(k)) for k in a.sites)
    assert total.meta["tasks"] == ["a", "a", "a"]
    n = a.norms()
    assert all(abs((2 * a).norms()[k] - 2 * n[k]) < 1e-6 for k in a.sites)


def test_sum_of_vectors_refuses_none_and_matches_addition(tiny_pair):
    # the builtin sum() of no vectors is the int 0, whose .save / .select / .meta fail far from the cause
    with pytest.raises(UsageError, match="at least one"):
        TaskVector.sum([])
    with pytest.raises(UsageError):
        TaskVector.sum(v for v in [])
    base, tuned = tiny_pair
    a = TaskVector.from_models(base, tuned, "attn", meta={"tasks": ["a"]})
    b = a * 0.5
    assert TaskVector.sum([a]) is a
    total = TaskVector.sum(iter([a, b, a]))
    assert all(torch.equal(total.delta(k), (a + b + a).delta(k)) for k in a.sites)
    assert total.meta["tasks"] == ["a", "a", "a"]


def test_sum_adds_extra_deltas_by_name(tiny_pair):
    base, tuned = tiny_pair
    a = TaskVector.from_models(base, tuned, "attn-qkv", full=True)
    only = next(iter(a.extra))
    b = TaskVector(dict(a.dense), extra={only: a.extra[only]})
    total = TaskVector.sum([a, b])
    assert list(total.extra) == list(a.extra)
    assert torch.equal(total.extra[only], 2 * a.extra[only])
    assert all(torch.equal(total.extra[k], a.extra[k]) for k in a.extra if k != only)
    assert list(TaskVector.sum([b, a]).extra)[0] == only


def test_lora_materialisation_norms_and_ranks(tiny):
    sites = [s.name for s in find_sites(tiny, "attn")]
    tv = lora_vector(sites, rank=2)
    dense = tv.to_dense()
    for s in sites:
        a, b = tv.lora[s]
        assert torch.allclose(dense.delta(s), 2.0 * b @ a)
        assert abs(tv.norms()[s] - torch.linalg.matrix_norm(2.0 * b @ a).item()) < 1e-3
    assert set(tv.ranks().values()) == {2} and set(dense.ranks().values()) == {2}
    # LoRA + LoRA stays factored: ranks add, the product is the sum
    both = tv + lora_vector(sites, rank=3, seed=1, scale=0.5)
    assert both.kind == "lora" and both.rank == 5
    other = lora_vector(sites, rank=3, seed=1, scale=0.5)
    s0 = sites[0]
    assert torch.allclose(both.delta(s0), tv.delta(s0) + other.delta(s0), atol=1e-5)
    assert torch.allclose((3 * tv).delta(s0), 3 * tv.delta(s0))


def test_save_load_bit_for_bit(tmp_path, tiny_pair):
    base, tuned = tiny_pair
    tv = TaskVector.from_models(base, tuned, "attn", full=True, meta={"tasks": ["x"], "architecture": "tiny"})
    tv.save(tmp_path / "tv.safetensors")
    back = TaskVector.load(tmp_path / "tv.safetensors")
    assert back.sites == tv.sites and back.kind == "dense"
    assert all(torch.equal(back.delta(s), tv.delta(s)) for s in tv.sites)
    assert all(torch.equal(back.extra[k], v) for k, v in tv.extra.items())
    assert back.meta["architecture"] == "tiny" and back.meta["tasks"] == ["x"]
    assert back.meta["orthoxfer_version"]

    lora = lora_vector([s.name for s in find_sites(base, "attn")], scale=0.1 + 0.2)
    lora.save(tmp_path / "lora.safetensors")
    back = TaskVector.load(tmp_path / "lora.safetensors")
    assert back.kind == "lora" and back.scale == lora.scale and back.rank == 2
    assert all(
        torch.equal(back.lora[s][0], lora.lora[s][0]) and torch.equal(back.lora[s][1], lora.lora[s][1])
        for s in lora.sites
    )


def test_apply_to_mismatching_model_names_first_site_and_shapes(tiny_pair):
    base, tuned = tiny_pair
    tv = TaskVector.from_models(base, tuned, "attn")
    wider = small_clip(width=48)
    with pytest.raises(MismatchError, match=r"visual.transformer.resblocks.0.attn.q.*\(32, 32\).*\(48, 48\)"):
        tv.apply_to(wider)
    deeper_only = small_clip(layers=1)
    with pytest.raises(MismatchError, match="resblocks.1.attn.q.*does not exist"):
        tv.apply_to(deeper_only)


def test_corrupt_and_foreign_files_are_rejected(tmp_path, tiny_pair):
    base, tuned = tiny_pair
    path = tmp_path / "tv.safetensors"
    TaskVector.from_models(base, tuned, "attn").save(path)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    for name in ("trunc", "garbage", "plain"):
        with pytest.raises(ArtifactError, match="not a valid orthoxfer task vector file"):
            TaskVector.load(tmp_path / f"{name}.safetensors")


def test_non_finite_values_are_named(tiny_pair):
    base, tuned = tiny_pair
    tv = TaskVector.from_models(base, tuned, "attn")
    tv.dense["visual.transformer.resblocks.1.attn.v"][0, 0] = float("nan")
    with pytest.raises(Exception, match="resblocks.1.attn.v"):
        tv.check_finite()
