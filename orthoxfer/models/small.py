"""Small open_clip CLIPs built from a config: real open_clip classes, any width.

They stand in for ViT-B/32 wherever a test or the offline suite needs a model that
trains in seconds on a CPU; everything that works on them works unchanged on the
real towers because they are the same classes.
"""

from __future__ import annotations

import open_clip
import torch


def default_head_width(width: int) -> int:
    """The attention head width a small CLIP of ``width`` gets unless told otherwise: four heads, each at least 8 wide."""
    return max(8, width // 4)


def small_config(
    width: int = 32,
    layers: int = 2,
    image_size: int = 16,
    patch_size: int = 4,
    embed_dim: int = 16,
    text_width: int = 32,
    text_layers: int = 1,
    quick_gelu: bool = False,
    head_width: int | None = None,
) -> dict:
    """An open_clip model config (the dict ``open_clip.CLIP(**config)`` and ``register_arch`` take); ``head_width``
    None is :func:`default_head_width`."""
    vision = {
        "image_size": image_size,
        "patch_size": patch_size,
        "width": width,
        "layers": layers,
        "head_width": default_head_width(width) if head_width is None else head_width,
    }
    text = {"context_length": 16, "vocab_size": 49408, "width": text_width, "heads": 2, "layers": text_layers}
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text, "quick_gelu": quick_gelu}


def small_clip(seed: int = 0, **config) -> open_clip.CLIP:
    """A seeded CLIP from :func:`small_config` (``width``, ``layers``, ... as keywords)."""
    torch.manual_seed(seed)
    return open_clip.CLIP(**small_config(**config)).eval()
