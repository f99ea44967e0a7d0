"""Which coordinate permutation acts on each axis of an open_clip ViT image-tower parameter.

An image tower's function is unchanged when its coordinates are relabelled consistently:
the residual stream by one permutation shared by every block (the residual sums tie
them), each block's query/key head space by one permutation and its value/output head
space by another (both mapping head blocks onto head blocks by the *same* permutation
of the heads, so each head's values stay with its queries and keys; within a head the two
may differ), and each block's MLP hidden units by their own. LayerNorm commutes with any
coordinate permutation. Every parameter's axes are named here by the space that
permutes them, so the planted positive control and TransFusion relabel a tower, a task
vector or one site with the same code.

Space keys: ``residual``, ``qk/<block>``, ``vo/<block>``, ``hidden/<block>``. Names are
relative to the tower (``transformer.resblocks.0.attn.in_proj_weight``). A permutation
``perm`` of a space relabels index ``i`` as ``perm[i]`` of the original:
``permuted[i] = original[perm[i]]`` along that axis.
"""

from __future__ import annotations

import re

import torch

from orthoxfer.errors import UsageError
from orthoxfer.vectors.sites import Site

RESIDUAL = "residual"
Axis = (
    str | tuple[str, ...] | None
)  # a space, an axis cut in equal chunks of different spaces (in_proj's q|k|v), or unpermuted
Perms = dict[str, torch.Tensor]  # space key -> index tensor

# parameters whose first axis is the residual stream: permuted there only
RESIDUAL_FIRST = re.compile(
    r"(.*\.)?(class_embedding|conv1\.weight|proj|ln_(pre|post|1|2)\.(weight|bias)|ls_[12]\.gamma|out_proj\.bias|c_proj\.bias)"
)
_BLOCK = re.compile(r"(.*\.)?resblocks\.(\d+)\.")


def param_axes(name: str) -> tuple[Axis, ...]:
    """The space of each axis of the tower parameter ``name`` (trailing axes not listed are unpermuted)."""
    if RESIDUAL_FIRST.fullmatch(name):  # includes the image projection ``proj``
        return (RESIDUAL,)
    if name.endswith("positional_embedding"):
        return (None, RESIDUAL)
    block = _BLOCK.match(name)
    if block is not None:
        b = block.group(2)
        qk, vo, hidden = f"qk/{b}", f"vo/{b}", f"hidden/{b}"
        axes: dict[str, tuple[Axis, ...]] = {
            "attn.in_proj_weight": ((qk, qk, vo), RESIDUAL),
            "attn.in_proj_bias": ((qk, qk, vo),),
            "attn.out_proj.weight": (RESIDUAL, vo),
            "mlp.c_fc.weight": (hidden, RESIDUAL),
            "mlp.c_fc.bias": (hidden,),
            "mlp.c_proj.weight": (RESIDUAL, hidden),
        }
        found = axes.get(name[block.end() :])
        if found is not None:
            return found
    raise UsageError(
        f"parameter {name!r} is not one a plain open_clip ViT image tower has (conv stem, class token, LayerNorms, "
        "multi-head attention, two-layer MLP): it cannot be relabelled by coordinate permutations"
    )


def _one_space(axis: Axis) -> str | None:
    """An axis that :func:`param_axes` never cuts in chunks (only a first axis is ever cut)."""
    if isinstance(axis, tuple):
        raise AssertionError(f"an axis past the first is cut in chunks of spaces {axis}; param_axes never does that")
    return axis


def pieces(name: str, value: torch.Tensor) -> list[tuple[torch.Tensor, tuple[str | None, ...]]]:
    """``value`` cut where its first axis holds several spaces (q | k | v), each piece with one space per axis."""
    axes = param_axes(name)
    first = axes[0]
    if isinstance(first, tuple):
        return [(chunk, (space, *map(_one_space, axes[1:]))) for chunk, space in zip(value.chunk(len(first)), first)]
    return [(value, tuple(map(_one_space, axes)))]


def site_axes(site: Site, param: str) -> tuple[str | None, ...]:
    """The spaces of a site's rows and columns (a q/k/v site is one chunk of ``in_proj_weight``); ``param``: its tower name."""
    axes = param_axes(param)
    first = axes[0]
    if isinstance(first, tuple):
        return (first[site.start // (site.stop - site.start)], *map(_one_space, axes[1:]))
    return tuple(map(_one_space, axes))


def permute_axes(value: torch.Tensor, axes: tuple[str | None, ...], perms: Perms) -> torch.Tensor:
    """``value`` with each named axis indexed by its space's permutation."""
    for dim, space in enumerate(axes):
        if space is not None:
            value = value.index_select(dim, perms[space].to(value.device))
    return value


def permute_param(name: str, value: torch.Tensor, perms: Perms) -> torch.Tensor:
    """The tower parameter ``name`` relabelled by ``perms`` (every space it touches must be in ``perms``)."""
    return torch.cat([permute_axes(piece, axes, perms) for piece, axes in pieces(name, value)])


def tower_blocks(tower: torch.nn.Module | None, what: str) -> torch.nn.ModuleList:
    """The residual blocks of an open_clip ViT image tower; anything else is refused in one line naming ``what``."""
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
    if blocks is None or not len(blocks):
        raise UsageError(f"{what} needs an open_clip model with a ViT image tower (model.visual.transformer)")
    return blocks


def block_attention(block: torch.nn.Module, what: str) -> torch.nn.MultiheadAttention:
    """A residual block's attention: torch's MultiheadAttention, whose packed q|k|v rows :func:`param_axes` names."""
    attn = getattr(block, "attn", None)
    if not isinstance(attn, torch.nn.MultiheadAttention):
        raise UsageError(
            f"{what} needs blocks whose attention is torch's MultiheadAttention (open_clip's ViT), not {type(attn).__name__}"
        )
    return attn
