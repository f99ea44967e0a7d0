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

:func:`reference_axes` names the same axes as TransFusion's released code does
(``aimagelab/TransFusion``'s CLIP permutation spec), which is not function-preserving:
each sub-layer writes the residual stream in a space of its own (``residual/<k>``: k = 0
after the stem, 2b + 1 after block b's attention, 2b + 2 after its MLP; the identity
shortcuts that would tie them are left out), and one ``heads/<block>`` space permutes
q, k, v and the heads ``out_proj`` reads. Every function here that reads axes takes
the naming (:data:`Naming`) to use.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from orthoxfer.errors import UsageError
from orthoxfer.vectors.sites import Site, default_root

RESIDUAL = "residual"
Axis = (
    str | tuple[str, ...] | None
)  # a space, an axis cut in equal chunks of different spaces (in_proj's q|k|v), or unpermuted
Perms = dict[str, torch.Tensor]  # space key -> index tensor
Naming = Callable[[str], tuple[Axis, ...]]  # a tower parameter's name -> the space of each of its axes

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


def reference_axes(name: str, depth: int) -> tuple[Axis, ...]:
    """The spaces of ``name``'s axes as TransFusion's reference names them (see the module docstring); ``depth``:
    the tower's number of blocks, whose last MLP writes the space ``ln_post`` and ``proj`` read."""

    def rename(space: str) -> str:
        if space == RESIDUAL:
            return f"{RESIDUAL}/{_stream(name, depth)}"
        return "heads/" + space.split("/", 1)[1] if space.startswith(("qk/", "vo/")) else space

    return tuple(
        tuple(map(rename, a)) if isinstance(a, tuple) else None if a is None else rename(a) for a in param_axes(name)
    )


def _stream(name: str, depth: int) -> int:
    """Which sub-layer's output stream the residual axis of ``name`` is: 0 the stem's, 2b + 1 block b's attention's,
    2b + 2 its MLP's (each parameter has one residual axis)."""
    block = _BLOCK.match(name)
    if block is None:
        return 2 * depth if re.fullmatch(r"(.*\.)?(ln_post\.(weight|bias)|proj)", name) else 0
    b, rest = int(block.group(2)), name[block.end() :]
    if rest.startswith(("ln_1.", "attn.in_proj")):
        return 2 * b
    if rest.startswith(("attn.out_proj.", "ls_1.", "ln_2.", "mlp.c_fc.")):
        return 2 * b + 1
    return 2 * b + 2  # mlp.c_proj, ls_2


def _one_space(axis: Axis) -> str | None:
    """An axis that :func:`param_axes` never cuts in chunks (only a first axis is ever cut)."""
    if isinstance(axis, tuple):
        raise AssertionError(f"an axis past the first is cut in chunks of spaces {axis}; param_axes never does that")
    return axis


def pieces(
    name: str, value: torch.Tensor, naming: Naming = param_axes
) -> list[tuple[torch.Tensor, tuple[str | None, ...]]]:
    """``value`` cut where its first axis holds several spaces (q | k | v), each piece with one space per axis."""
    axes = naming(name)
    first = axes[0]
    if isinstance(first, tuple):
        return [(chunk, (space, *map(_one_space, axes[1:]))) for chunk, space in zip(value.chunk(len(first)), first)]
    return [(value, tuple(map(_one_space, axes)))]


def site_axes(site: Site, param: str, naming: Naming = param_axes) -> tuple[str | None, ...]:
    """The spaces of a site's rows and columns (a q/k/v site is one chunk of ``in_proj_weight``); ``param``: its tower name."""
    axes = naming(param)
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


def permute_param(name: str, value: torch.Tensor, perms: Perms, naming: Naming = param_axes) -> torch.Tensor:
    """The tower parameter ``name`` relabelled by ``perms`` (every space it touches must be in ``perms``)."""
    return torch.cat([permute_axes(piece, axes, perms) for piece, axes in pieces(name, value, naming)])


def image_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The model's image tower (``visual`` of a CLIP), or the model itself where it is one."""
    root = default_root(model)
    return model.get_submodule(root) if root else model


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
