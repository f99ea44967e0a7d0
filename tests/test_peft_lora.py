"""PEFT LoRA adapters read as LoRA task vectors: the factors kept, the update equal to what PEFT merges."""

import copy

import pytest
import torch
from typer.testing import CliRunner

peft = pytest.importorskip("peft", reason="peft is the [hf] extra: pip install 'orthoxfer[hf]'")
pytest.importorskip("transformers", reason="transformers is the [hf] extra: pip install 'orthoxfer[hf]'")

import hf_tiny  # noqa: E402 - needs transformers
from hf_tiny import images, rel_error, save  # noqa: E402
from test_models_loading import hub_snapshot  # noqa: E402

from orthoxfer.cli import app  # noqa: E402
from orthoxfer.errors import UsageError  # noqa: E402
from orthoxfer.models.loading import load_model  # noqa: E402
from orthoxfer.vectors.peft_lora import read_adapter  # noqa: E402
from orthoxfer.vectors.taskvector import TaskVector  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
ALL = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    hf_tiny.register()
    root = tmp_path_factory.mktemp("peft")
    model = hf_tiny.vision_model()
    return root, model, save(model, root / "base")


def _adapter(model, folder, seed: int = 0, **lora):
    """A real PEFT adapter on a copy of ``model`` with random B (PEFT starts B at zero), and the merged model."""
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(**lora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    wrapped.save_pretrained(folder)
    return wrapped.merge_and_unload()


def _merged_delta(base_dir, merged, folder) -> TaskVector:
    """What PEFT's merge changed, on the open_clip sites, through the transformers -> open_clip conversion."""
    return TaskVector.from_models(
        load_model(str(base_dir)).model, load_model(str(save(merged, folder))).model, "attn,mlp"
    )


def _same_updates(vector: TaskVector, expected: TaskVector) -> None:
    changed = [s for s in expected.sites if expected.dense[s].abs().max() > 0]
    assert sorted(vector.sites) == sorted(changed)
    for site in vector.sites:
        torch.testing.assert_close(vector.delta(site), expected.dense[site], atol=1e-6, rtol=1e-5)


def test_an_adapter_is_a_lora_vector_equal_to_the_merged_models_delta(base):
    root, model, base_dir = base
    merged = _adapter(model, root / "adapter", r=4, lora_alpha=8, target_modules=ALL)
    out = root / "lora.safetensors"
    args = ["vector", "from-checkpoints", "--base", str(base_dir), "--finetuned", str(root / "adapter")]
    result = runner.invoke(app, [*args, "--out", str(out), "--task", "dtd"])
    assert result.exit_code == 0, result.output
    assert "12 sites, LoRA rank 4 (factors kept)" in result.output
    vector = TaskVector.load(out)
    assert vector.kind == "lora" and vector.scale == 2.0 and vector.meta["tasks"] == ["dtd"]
    a, b = vector.lora["visual.transformer.resblocks.0.mlp.c_fc.weight"]
    assert a.shape == (4, 32) and b.shape == (128, 4)  # a rectangular site, factored
    _same_updates(vector, _merged_delta(base_dir, merged, root / "merged"))
    # and by features: the open_clip base plus the vector computes the merged transformers model
    x = images()
    with torch.no_grad():
        edited = vector.added_to_copy(load_model(str(base_dir)).model)
        assert rel_error(edited.encode_image(x), merged(pixel_values=x).image_embeds) < 1e-5


def test_rank_and_alpha_patterns_and_rslora_scale_each_site_as_peft_does(base):
    root, model, base_dir = base
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "out_proj", "fc1"], "use_rslora": True}
    merged = _adapter(model, root / "patterns", rank_pattern={"fc1": 2}, alpha_pattern={"out_proj": 3}, **lora)
    vector = read_adapter(root / "patterns", load_model(str(base_dir)).model)
    assert vector.scale == 1.0 and vector.lora["visual.transformer.resblocks.1.mlp.c_fc.weight"][0].shape[0] == 2
    _same_updates(vector, _merged_delta(base_dir, merged, root / "merged-patterns"))


def test_an_adapter_repository_is_read_from_the_hub_cache(base, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, model, base_dir = base
    _adapter(model, root / "hub-adapter", r=2, lora_alpha=4, target_modules=["v_proj"])
    snapshot = hub_snapshot(tmp_path, "owner/adapter")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (snapshot / name).write_bytes((root / "hub-adapter" / name).read_bytes())
    args = ["vector", "from-checkpoints", "--base", str(base_dir), "--finetuned", "hf-hub:owner/adapter"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "v.safetensors"), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    local = read_adapter(root / "hub-adapter", load_model(str(base_dir)).model)
    vector = TaskVector.load(tmp_path / "v.safetensors")
    assert vector.sites == local.sites and all(torch.equal(vector.delta(s), local.delta(s)) for s in local.sites)


def test_sites_narrow_an_adapter(base):
    root, model, base_dir = base
    _adapter(model, root / "narrow", r=2, lora_alpha=2, target_modules=ALL)
    out = root / "qkv.safetensors"
    args = ["vector", "from-checkpoints", "--base", str(base_dir), "--finetuned", str(root / "narrow")]
    result = runner.invoke(app, [*args, "--out", str(out), "--sites", "attn-qkv"])
    assert result.exit_code == 0, result.output
    assert all(s.rsplit(".", 1)[1] in "qkv" for s in TaskVector.load(out).sites)


def test_an_open_clip_adapter_maps_its_own_names(tmp_path, tiny_arch):
    loaded = load_model(f"{tiny_arch}:none")
    wrapped = peft.get_peft_model(copy.deepcopy(loaded.model), peft.LoraConfig(r=2, target_modules=["c_fc", "c_proj"]))
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_()
    wrapped.save_pretrained(tmp_path / "adapter")
    merged = wrapped.merge_and_unload()
    vector = read_adapter(tmp_path / "adapter", loaded.model)
    expected = TaskVector.from_models(loaded.model, merged, "mlp")
    assert sorted(vector.sites) == sorted(s for s in expected.sites if s.startswith("visual."))
    for site in vector.sites:
        torch.testing.assert_close(vector.delta(site), expected.dense[site], atol=1e-6, rtol=1e-5)
    assert vector.meta["text_modules_left_out"] == 2  # the text tower's c_fc and c_proj


def test_what_an_adapter_cannot_be_read_as_is_one_line(base):
    root, model, base_dir = base
    _adapter(model, root / "dora", r=2, target_modules=["q_proj"], use_dora=True)
    _adapter(model, root / "plain", r=2, target_modules=["q_proj"])
    cases = [
        (["--finetuned", str(root / "dora")], "DoRA magnitudes"),
        (["--finetuned", str(root / "plain"), "--full"], "drop --full"),
        (["--finetuned", str(root / "plain"), "--sites", "mlp"], "selects none of the adapter's"),
    ]
    for extra, message in cases:
        result = runner.invoke(
            app, ["vector", "from-checkpoints", "--base", str(base_dir), *extra, "--out", str(root / "x.safetensors")]
        )
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    with pytest.raises(UsageError, match="is a PEFT adapter, not a model"):
        load_model(str(root / "plain"))
