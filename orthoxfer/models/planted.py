"""Positive control: a target that is the source with a known, function-preserving permutation planted in it.

The residual stream of the image tower is permuted by ``perm`` and so is every
attention head space (q, k, v and the concatenated heads that ``out_proj`` reads), with
``perm`` mapping head blocks onto head blocks: attention scores, values and the
residual sums are then only relabelled, and LayerNorm commutes with any coordinate
permutation, so the target computes exactly the source's features. A rotation would
not do: LayerNorm's mean and per-coordinate gains break rotational invariance. The MLP
hidden units get an independent permutation (it touches no site). Which permutation acts
on which axis of each parameter is :mod:`orthoxfer.models.tower_axes`'s.

Every attention site then satisfies ``W_T = P W_S P^T`` with ``P = I[perm]``, so the
source's task vector carried by ``U* = P^T`` (``U*^T dW U* = P dW P^T``) is exactly the
source's fine-tuned model, relabelled: its accuracy is the ceiling a strategy should
reach, and ``||U - U*||_F / sqrt(d)`` says how close it came.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from orthoxfer.models.tower_axes import RESIDUAL, block_attention, permute_param, tower_blocks
from orthoxfer.vectors.sites import find_sites


def block_permutation(dim: int, heads: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of ``range(dim)`` that maps whole head blocks onto head blocks, shuffling inside them too."""
    width = dim // heads
    blocks = torch.randperm(heads, generator=generator)
    return torch.cat([b * width + torch.randperm(width, generator=generator) for b in blocks.tolist()])


def planted_target(source: nn.Module, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A copy of ``source`` whose image tower is permuted (function-preserving), and ``U*`` for each attention site.

    Needs an open_clip ``VisionTransformer`` with plain residual blocks (conv stem,
    class token, LayerNorms, multi-head attention, two-layer MLP); anything else is
    refused by name.
    """
    blocks = tower_blocks(getattr(source, "visual", None), "the positive control")
    dim = source.get_parameter("visual.class_embedding").shape[0]
    heads = block_attention(blocks[0], "the positive control").num_heads
    g = torch.Generator().manual_seed(seed)
    perm = block_permutation(dim, heads, g)
    perms = {RESIDUAL: perm}
    for i, block in enumerate(blocks):
        perms.update(
            {
                f"qk/{i}": perm,
                f"vo/{i}": perm,
                f"hidden/{i}": torch.randperm(block.get_parameter("mlp.c_fc.weight").shape[0], generator=g),
            }
        )
    target = copy.deepcopy(source)
    with torch.no_grad():
        for name, param in target.get_submodule("visual").named_parameters():
            param.copy_(permute_param(name, param, perms))
    u_star = torch.eye(dim)[perm].T  # U* = P^T with P = I[perm]
    return target, {site.name: u_star for site in find_sites(target, "attn") if site.dim == dim}


def recovery_error(us: dict[str, torch.Tensor], planted: dict[str, torch.Tensor]) -> float:
    """Mean over the planted sites of ``||U - U*||_F / sqrt(d)`` (0: recovered; about 1.4 for an unrelated rotation)."""
    errors = [
        torch.linalg.matrix_norm(us[s].float() - u).item() / u.shape[0] ** 0.5 for s, u in planted.items() if s in us
    ]
    return sum(errors) / len(errors)
