"""Tiny transformers CLIPs (random weights, made in the test) and the open_clip architecture of the same shape.

Importing this module needs transformers; test modules reach it through
``pytest.importorskip("transformers")`` first, so they skip with a reason without it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from orthoxfer.models.loading import register_arch
from orthoxfer.models.small import small_config

HF_ARCH = "orthoxfer-test-hf"  # open_clip's twin of VISION below: width 32, 2 layers, 4 heads, 32 px, patch 8
VISION = {
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 16,
    "hidden_act": "quick_gelu",
}
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
}


def register() -> str:
    config = small_config(width=32, layers=2, image_size=32, patch_size=8, embed_dim=16, quick_gelu=True)
    register_arch(HF_ARCH, config)
    return HF_ARCH


def _jitter(model: torch.nn.Module, seed: int, size: float) -> torch.nn.Module:
    """Move every weight off its init (layer norms at exactly 1/0 would hide a swapped name)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return model.eval()


def vision_model(seed: int = 0, cls=None, **changes) -> transformers.PreTrainedModel:
    cls = cls or transformers.CLIPVisionModelWithProjection
    torch.manual_seed(seed)
    return _jitter(cls(transformers.CLIPVisionConfig(**{**VISION, **changes})), seed + 100, 0.05)


def clip_model(seed: int = 0) -> transformers.CLIPModel:
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    return _jitter(transformers.CLIPModel(config), seed + 100, 0.05)


def finetuned(model: transformers.PreTrainedModel, seed: int = 1) -> transformers.PreTrainedModel:
    import copy

    return _jitter(copy.deepcopy(model), seed, 0.01)


def save(model: transformers.PreTrainedModel, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()
