"""transformers CLIP checkpoints in and out, checked by features: the converted open_clip model computes what transformers does."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers", reason="transformers is the [hf] extra: pip install 'orthoxfer[hf]'")

import hf_tiny  # noqa: E402 - needs transformers
from hf_tiny import images, rel_error, save  # noqa: E402
from test_models_loading import hub_snapshot  # noqa: E402

from orthoxfer.cli import app  # noqa: E402
from orthoxfer.errors import OrthoxferError, UsageError  # noqa: E402
from orthoxfer.models.heads import zero_shot_head  # noqa: E402
from orthoxfer.models.loading import load_model  # noqa: E402
from orthoxfer.vectors.taskvector import TaskVector  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def hf_arch():
    return hf_tiny.register()


@pytest.fixture(scope="module")
def pair(tmp_path_factory, hf_arch):
    """A transformers base and a fine-tuned copy (every weight moved), saved as transformers folders."""
    root = tmp_path_factory.mktemp("hf")
    base = hf_tiny.vision_model()
    tuned = hf_tiny.finetuned(base)
    return root, base, tuned, save(base, root / "base"), save(tuned, root / "tuned")


def _vector(base: str, finetuned: str, out, *extra: str):
    args = ["vector", "from-checkpoints", "--base", base, "--finetuned", finetuned, "--out", str(out), *extra]
    return runner.invoke(app, args)


def _one_line(result) -> str:
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_a_transformers_folder_loads_as_open_clip_computing_the_same_image_features(pair, hf_arch):
    _, base, _, base_dir, _ = pair
    loaded = load_model(str(base_dir))
    assert loaded.open_clip_arch == hf_arch and loaded.quick_gelu and loaded.spec == str(base_dir)
    assert loaded.identity.startswith(f"{base_dir}:quick_gelu=True:")
    assert not loaded.text_tower  # a vision model: no zero-shot heads from a random text tower
    with pytest.raises(UsageError, match="without a text tower, so it has no zero-shot heads"):
        zero_shot_head(loaded, None, ["cat", "dog"], ["a photo of a {}."])
    x = images()
    with torch.no_grad():
        assert rel_error(loaded.model.encode_image(x), base(pixel_values=x).image_embeds) < 1e-5


def test_a_clip_model_converts_both_towers(tmp_path, hf_arch):
    hf = hf_tiny.clip_model()
    loaded = load_model(str(save(hf, tmp_path / "clip")))
    assert loaded.open_clip_arch == hf_arch and loaded.text_tower
    x = images()
    tokens = torch.randint(1, 49000, (2, 16), generator=torch.Generator().manual_seed(0))
    tokens[0, 5], tokens[1, 9] = 49407, 49407  # the end-of-text token both pool at
    with torch.no_grad():
        image = hf.visual_projection(hf.vision_model(pixel_values=x).pooler_output)
        text = hf.text_projection(hf.text_model(input_ids=tokens).pooler_output)
        assert rel_error(loaded.model.encode_image(x), image) < 1e-5
        assert rel_error(loaded.model.encode_text(tokens), text) < 1e-5
        assert loaded.model.logit_scale.item() == pytest.approx(hf.logit_scale.item())


def test_a_vector_from_transformers_checkpoints_carries_the_fine_tune_into_open_clip(pair, hf_arch):
    root, base, tuned, base_dir, tuned_dir = pair
    out = root / "tv.safetensors"
    result = _vector(str(base_dir), str(tuned_dir), out, "--sites", "attn,mlp", "--full")
    assert result.exit_code == 0, result.output
    assert f"open_clip architecture {hf_arch} (QuickGELU)" in result.output
    assert "(CLIPVisionModelWithProjection)" in result.output
    vector = TaskVector.load(out)
    # by names: q of layer 1 is q_proj's difference; the projection's is transposed
    hb, ht = base.state_dict(), tuned.state_dict()
    q = "vision_model.encoder.layers.1.self_attn.q_proj.weight"
    assert torch.equal(vector.dense["visual.transformer.resblocks.1.attn.q"], ht[q] - hb[q])
    proj = "visual_projection.weight"
    assert torch.allclose(vector.extra["visual.proj"], (ht[proj] - hb[proj]).T)
    # by features: the open_clip base plus the vector computes the transformers fine-tuned model
    model = vector.added_to_copy(load_model(str(base_dir)).model)
    x = images()
    with torch.no_grad():
        assert rel_error(model.encode_image(x), tuned(pixel_values=x).image_embeds) < 1e-5


def test_the_vector_is_the_same_from_an_open_clip_base_of_the_same_weights(pair, hf_arch):
    root, _, _, base_dir, tuned_dir = pair
    save_file(load_model(str(base_dir)).model.state_dict(), str(root / "base.safetensors"))
    a, b = root / "a.safetensors", root / "b.safetensors"
    assert _vector(str(base_dir), str(tuned_dir), a).exit_code == 0
    result = _vector(f"{hf_arch}:{root / 'base.safetensors'}", str(tuned_dir), b)
    assert result.exit_code == 0, result.output
    va, vb = TaskVector.load(a), TaskVector.load(b)
    assert va.sites == vb.sites and len(va.sites) == 8
    assert all(torch.equal(va.dense[s], vb.dense[s]) for s in va.sites)


def test_a_clip_vision_model_without_projection_keeps_the_base_projection(pair, tmp_path, hf_arch):
    """FusionBench's checkpoints are CLIPVisionModels: no projection to take a difference of."""
    _, _, tuned, base_dir, _ = pair
    bare = transformers.CLIPVisionModel(tuned.config)
    bare.load_state_dict(
        {k.removeprefix("vision_model."): v for k, v in tuned.state_dict().items() if "vision_model." in k}
    )
    out = tmp_path / "tv.safetensors"
    result = _vector(str(base_dir), str(save(bare, tmp_path / "bare")), out, "--full")
    assert result.exit_code == 0, result.output
    vector = TaskVector.load(out)
    assert "visual.proj" not in vector.extra
    model = vector.added_to_copy(load_model(str(base_dir)).model)
    x = images()
    with torch.no_grad():
        expected = bare(pixel_values=x).pooler_output @ model.visual.proj
        assert rel_error(model.encode_image(x), expected) < 1e-5


def test_mismatched_checkpoints_are_one_line(pair, tmp_path, hf_arch):
    _, _, _, base_dir, _ = pair
    text_only = transformers.CLIPTextModel(transformers.CLIPTextConfig(**hf_tiny.TEXT))
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit", "architectures": ["ViTModel"]}))
    cases = [
        (save(text_only, tmp_path / "text"), 2, "text model (CLIPTextModel): it has no image tower"),
        (tmp_path / "vit", 2, "is a transformers vit model (ViTModel), not CLIP"),
        (save(hf_tiny.vision_model(hidden_size=48), tmp_path / "wide"), 1, "has shape (48, 3, 8, 8) in the checkpoint"),
        (save(hf_tiny.vision_model(hidden_act="gelu"), tmp_path / "gelu"), 1, "trained with GELU"),
    ]
    for folder, code, message in cases:
        result = _vector(str(base_dir), str(folder), tmp_path / "tv.safetensors")
        assert result.exit_code == code and message in _one_line(result), result.output
    with pytest.raises(UsageError, match="has no image tower"):
        load_model(str(tmp_path / "text"))
    with pytest.raises(UsageError, match="is a transformers folder: name it alone, without orthoxfer-test-hf:"):
        load_model(f"{hf_arch}:{base_dir}")


def test_a_transformers_repository_loads_from_the_hub_cache_offline(pair, tmp_path, monkeypatch, hf_arch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, base, tuned, base_dir, tuned_dir = pair
    snapshot = hub_snapshot(tmp_path, "owner/tuned")
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((tuned_dir / name).read_bytes())
    loaded = load_model("hf-hub:owner/tuned", cache_dir=tmp_path)
    assert loaded.spec == "hf-hub:owner/tuned" and loaded.identity.endswith(":abc123")
    x = images()
    with torch.no_grad():
        assert rel_error(loaded.model.encode_image(x), tuned(pixel_values=x).image_embeds) < 1e-5
    out = tmp_path / "tv.safetensors"
    result = _vector(str(base_dir), "hf-hub:owner/tuned", out, "--cache-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    with pytest.raises(OrthoxferError, match="owner/missing/open_clip_config.json is not in the Hugging Face cache"):
        load_model("hf-hub:owner/missing", cache_dir=tmp_path)


def test_apply_format_transformers_round_trips(pair, hf_arch):
    root, _, _, base_dir, tuned_dir = pair
    _vector(str(base_dir), str(tuned_dir), root / "full.safetensors", "--sites", "attn,mlp", "--full")
    out = root / "edited"
    args = ["apply", "--model", str(base_dir), "--task-vector", str(root / "full.safetensors"), "--scale", "0.5"]
    result = runner.invoke(app, [*args, "--out", str(out), "--format", "transformers"])
    assert result.exit_code == 0, result.output
    assert "CLIPVisionModelWithProjection.from_pretrained" in result.output
    expected = TaskVector.load(root / "full.safetensors").added_to_copy(load_model(str(base_dir)).model, 0.5)
    written = transformers.CLIPVisionModelWithProjection.from_pretrained(out).eval()
    assert written.config.hidden_act == "quick_gelu"
    x = images()
    with torch.no_grad():
        assert rel_error(written(pixel_values=x).image_embeds, expected.encode_image(x)) < 1e-5
        back = load_model(str(out)).model  # and in again: the same open_clip weights
        assert all(
            torch.allclose(back.state_dict()[k], v) for k, v in expected.visual.state_dict(prefix="visual.").items()
        )
    again = runner.invoke(app, [*args, "--out", str(out), "--format", "transformers"])  # its own folder: replaced
    assert again.exit_code == 0, again.output
    clash = runner.invoke(app, [*args, "--out", str(root), "--format", "transformers"])
    assert clash.exit_code == 2 and "holds other files" in _one_line(clash)


def test_a_transformers_folder_is_a_source_model_wherever_models_are_named(pair, hf_arch):
    """--source of `transfer`: TransFusion reads the source's weights, here converted on load."""
    root, _, _, base_dir, _ = pair
    from orthoxfer.suites import open_suite
    from orthoxfer.suites.base import SuiteRequest

    suite = open_suite("paper", SuiteRequest(data_root=root))
    assert suite.check(str(base_dir)) == "transformers"
    assert suite.load(str(base_dir)).open_clip_arch == hf_arch


def test_transfer_takes_a_transformers_folder_as_its_source(pair, hf_arch):
    """End to end: a vector from transformers checkpoints carried by TransFusion from the transformers source."""
    root, _, _, base_dir, tuned_dir = pair
    assert _vector(str(base_dir), str(tuned_dir), root / "attn.safetensors", "--task", "eurosat").exit_code == 0
    args = ["transfer", "--method", "transfusion", "--source", str(base_dir), "--target", f"{hf_arch}:none"]
    args += ["--task-vector", str(root / "attn.safetensors"), "--data-root", str(root), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    carried = TaskVector.load(root / "run" / "transferred.safetensors")
    assert carried.sites == TaskVector.load(root / "attn.safetensors").sites
    assert json.loads((root / "run" / "config.json").read_text())["source"] == str(base_dir)


def test_the_python_api_does_what_the_commands_do(pair, tmp_path, hf_arch):
    import orthoxfer

    root, _, tuned, base_dir, tuned_dir = pair
    base = orthoxfer.load_model(str(base_dir))
    vector = orthoxfer.vector_from_checkpoint(base, str(tuned_dir), "attn,mlp", full=True, meta={"tasks": ["dtd"]})
    assert vector.meta["finetuned_format"] == "transformers" and vector.meta["finetuned_open_clip_arch"] == hf_arch
    assert (
        _vector(str(base_dir), str(tuned_dir), tmp_path / "cli.safetensors", "--sites", "attn,mlp", "--full").exit_code
        == 0
    )
    cli = TaskVector.load(tmp_path / "cli.safetensors")
    assert (
        all(torch.equal(vector.dense[s], cli.dense[s]) for s in cli.sites) and vector.extra.keys() == cli.extra.keys()
    )
    model = vector.added_to_copy(base.model)
    orthoxfer.write_vision_model(model, tmp_path / "out", base.mean, base.std)
    written = transformers.CLIPVisionModelWithProjection.from_pretrained(tmp_path / "out").eval()
    x = images()
    with torch.no_grad():
        assert rel_error(written(pixel_values=x).image_embeds, tuned(pixel_values=x).image_embeds) < 1e-5


def test_a_pytorch_model_bin_in_transformers_4_layout_loads_without_unpickling(pair, tmp_path, hf_arch):
    """Older checkpoints (FusionBench's era): ``pytorch_model.bin``, the position_ids buffer saved with the weights."""
    _, _, tuned, _, tuned_dir = pair
    folder = tmp_path / "v4"
    folder.mkdir()
    (folder / "config.json").write_text((tuned_dir / "config.json").read_text())
    state = dict(tuned.state_dict())
    state["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    torch.save(state, folder / "pytorch_model.bin")
    loaded = load_model(str(folder))
    x = images()
    with torch.no_grad():
        assert rel_error(loaded.model.encode_image(x), tuned(pixel_values=x).image_embeds) < 1e-5
    torch.save({"model": torch.nn.Linear(2, 2)}, folder / "pytorch_model.bin")  # a pickled module: refused, one line
    with pytest.raises(OrthoxferError, match="could not read .*pytorch_model.bin as transformers weights"):
        load_model(str(folder))


def test_a_sharded_checkpoint_is_read_through_its_index(pair, tmp_path, hf_arch):
    _, _, tuned, _, _ = pair
    tuned.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    loaded = load_model(str(tmp_path / "sharded"))
    x = images()
    with torch.no_grad():
        assert rel_error(loaded.model.encode_image(x), tuned(pixel_values=x).image_embeds) < 1e-5


def test_writing_transformers_without_the_extra_is_one_line(pair, monkeypatch, hf_arch):
    import sys

    root, _, _, base_dir, _ = pair
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed: import raises ImportError
    args = ["apply", "--model", str(base_dir), "--task-vector", "x.safetensors", "--out", str(root / "never")]
    result = runner.invoke(app, [*args, "--format", "transformers"])
    assert result.exit_code == 2 and "pip install 'orthoxfer[hf]'" in _one_line(result)
    assert not (root / "never").exists()
