"""Target and source models with random weights for the timing benchmarks, built from one architecture name.

A step's cost depends on the shapes, not on the weights, so ``bench-speed`` and the width
ladder's budget time models nobody pre-trained: open_clip's by name, the test model, or
the mini suite's at any width of the ladder.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from orthoxfer.errors import UsageError
from orthoxfer.models.pretrain import PretrainConfig, build_model
from orthoxfer.models.small import small_clip

if TYPE_CHECKING:
    from open_clip import CLIP


def mini_width(arch: str) -> int | None:
    """The width of a mini-suite architecture name (``mini`` is the shipped 128, ``mini-w<W>`` any rung of the
    width ladder), None for any other name."""
    match = re.fullmatch(r"mini(?:-w(\d+))?", arch)
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else PretrainConfig().width


def build_models(arch: str, device: torch.device) -> tuple[CLIP, CLIP]:
    """Target and source of one architecture with random weights (timing does not depend on the values)."""
    import open_clip

    if arch == "tiny":
        return small_clip(seed=0).to(device), small_clip(seed=1).to(device)
    width = mini_width(arch)
    if width is not None:
        config = PretrainConfig(width=width)
        return build_model(config, "a").to(device), build_model(config, "b").to(device)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        try:
            models.append(open_clip.create_model(arch).eval().to(device))
        except RuntimeError as exc:
            raise UsageError(
                f"--arch {arch!r}: {exc}; use an open_clip model name (e.g. ViT-B-32), 'tiny' or 'mini-w<width>'"
            ) from None
    return tuple(models)
