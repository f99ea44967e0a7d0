"""Zero-shot heads: the task-arithmetic construction, frozen, and cached so the text tower runs once."""

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from orthoxfer.artifacts import load_artifact
from orthoxfer.data.classnames import CLASSNAMES, TEMPLATES
from orthoxfer.models.heads import KIND, ZeroShotHead, zero_shot_head

CLASSES = CLASSNAMES["EuroSAT"][:4]
PROMPTS = TEMPLATES["EuroSAT"]


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-32", context_length=16)  # the real BPE tokenizer, tiny context


def test_head_is_normalised_mean_of_normalised_prompt_embeddings(tiny, tokenizer):
    head = zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS)
    assert head.weight.shape == (4, 16) and head.num_classes == 4
    with torch.no_grad():
        for c, name in enumerate(CLASSES):
            text = F.normalize(tiny.encode_text(tokenizer([t.format(name) for t in PROMPTS])), dim=-1)
            torch.testing.assert_close(head.weight[c], F.normalize(text.mean(0), dim=0))
    assert head.logit_scale.item() == pytest.approx(tiny.logit_scale.exp().item())


def test_forward_is_scaled_cosine_and_the_head_is_frozen(tiny, tokenizer):
    head = zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS)
    features = torch.randn(5, 16, requires_grad=True)
    logits = head(features)
    torch.testing.assert_close(logits, head.logit_scale * F.normalize(features, dim=-1) @ head.weight.T)
    logits.sum().backward()  # usable inside training steps: no inference tensors inside
    assert features.grad is not None and list(head.parameters()) == []
    moved = head.to(torch.float64)
    assert moved.weight.dtype == torch.float64  # buffers follow the module


def test_cache_hit_skips_the_text_tower(tiny, tokenizer, tmp_path, monkeypatch):
    first = zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS, cache_dir=tmp_path, key="tiny:seed0", name="EuroSAT")
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("EuroSAT-") and path.suffix == ".safetensors"
    with safe_open(str(path), framework="pt") as f:  # a safetensors artifact, never a pickle
        assert json.loads(f.metadata()["orthoxfer"])["kind"] == KIND
    _, meta = load_artifact(path, KIND)
    assert meta["model"] == "tiny:seed0" and meta["templates"] == PROMPTS and meta["classes"] == 4

    def text_tower_must_not_run(*args, **kwargs):
        raise AssertionError("the text tower ran on a cache hit")

    monkeypatch.setattr(tiny, "encode_text", text_tower_must_not_run)
    again = zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS, cache_dir=tmp_path, key="tiny:seed0", name="EuroSAT")
    assert torch.equal(again.weight, first.weight) and again.logit_scale == first.logit_scale
    monkeypatch.undo()

    # any change of model key, classes or templates is a different head
    zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS[:1], cache_dir=tmp_path, key="tiny:seed0", name="EuroSAT")
    zero_shot_head(tiny, tokenizer, CLASSES[:3], PROMPTS, cache_dir=tmp_path, key="tiny:seed0", name="EuroSAT")
    zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS, cache_dir=tmp_path, key="other", name="EuroSAT")
    assert len(list(tmp_path.iterdir())) == 4

    path.write_bytes(b"truncated")  # a damaged cache entry is recomputed, not fatal
    healed = zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS, cache_dir=tmp_path, key="tiny:seed0", name="EuroSAT")
    assert torch.equal(healed.weight, first.weight) and load_artifact(path, KIND)


def test_bare_model_needs_tokenizer_and_key_to_cache(tiny, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        zero_shot_head(tiny, None, CLASSES, PROMPTS)
    with pytest.raises(ValueError, match="key="):
        zero_shot_head(tiny, tokenizer, CLASSES, PROMPTS, cache_dir=tmp_path)


def test_head_module_from_weights():
    head = ZeroShotHead(torch.eye(3), 10.0)
    logits = head(torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 1.0]]))
    torch.testing.assert_close(logits, torch.tensor([[0.0, 10.0, 0.0], [7.0710678, 0.0, 7.0710678]]))
