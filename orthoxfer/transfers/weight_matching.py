"""Data-free matching of two ViT image towers' coordinates: TransFusion's permutations, from the weights alone.

Every space of :mod:`orthoxfer.models.tower_axes` (the residual stream, shared by all
blocks; each block's query/key and value/output head spaces; each block's MLP hidden
units) gets the permutation that best aligns the source's weights to the target's:

- heads are matched first, per block, by the distance between their weights'
  singular-value spectra (of each head's q, k, v rows and ``out_proj`` columns), which no
  other permutation changes; Hungarian assignment (``scipy.optimize.linear_sum_assignment``);
- every other index by weight matching: for one space, the cost of pairing target index
  i with source index j is the summed inner product of all weights that space indexes
  (other axes relabelled by the current permutations), maximised by the same assignment,
  and within matched head pairs only for the head spaces.

The first round matches each space from the parameters whose other axes are already
matched, residual stream first (the conv stem, class token, position embedding, norms
and biases index it alone), so no space starts from a guess; later rounds re-match each
given all others (coordinate ascent of the total inner product) until a round changes
none. Where the target is the source relabelled, the true permutations are the unique
maximum wherever no two indices carry identical weights, so they are found exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from orthoxfer.models.tower_axes import RESIDUAL, Perms, block_attention, permute_axes, pieces, tower_blocks
from orthoxfer.vectors.taskvector import MismatchError

Piece = tuple[torch.Tensor, torch.Tensor, tuple[str | None, ...]]  # target part, source part, the space of each axis


@dataclass
class Matched:
    """Each space's permutation (``source[perm[i]]`` is matched to ``target[i]``) and the rounds it took."""

    perms: Perms
    rounds: int


def assignment(cost: torch.Tensor, maximize: bool = True) -> torch.Tensor:
    """The Hungarian assignment of rows to columns as an index tensor (row i gets column ``out[i]``)."""
    _, cols = linear_sum_assignment(cost.detach().double().cpu().numpy(), maximize=maximize)
    return torch.from_numpy(cols).long()


def head_spectra(in_proj: torch.Tensor, out_proj: torch.Tensor, heads: int) -> torch.Tensor:
    """Per head, the singular values of its q, k and v rows and its ``out_proj`` columns, concatenated: (heads, 4 * width)."""
    d = out_proj.shape[0]
    per_head = [chunk.reshape(heads, d // heads, -1) for chunk in in_proj.chunk(3)]
    per_head.append(out_proj.reshape(d, heads, d // heads).transpose(0, 1))
    return torch.cat([torch.linalg.svdvals(w) for w in per_head], dim=1)


def _tower_pieces(source: nn.Module, target: nn.Module, device: torch.device) -> list[Piece]:
    src = {n: p.detach().to(device, torch.float32) for n, p in source.named_parameters()}
    out = []
    for name, param in target.named_parameters():
        if name not in src or src[name].shape != param.shape:
            found = tuple(src[name].shape) if name in src else "none"
            raise MismatchError(f"parameter {name!r}: target shape {tuple(param.shape)}, source shape {found}")
        t = param.detach().to(device, torch.float32)
        out += [(pt, ps, axes) for (pt, axes), (ps, _) in zip(pieces(name, t), pieces(name, src[name]))]
    return out


def _cost(space: str, size: int, parts: list[Piece], perms: Perms) -> torch.Tensor:
    """Summed inner products of target index i with source index j over every part ``space`` indexes.

    A part counts once every other space it touches is matched: in the first round only
    those, so the cost never rests on an unmatched guess.
    """
    cost = torch.zeros(size, size, device=parts[0][0].device)
    for t, s, axes in parts:
        for dim, axis in enumerate(axes):
            others = tuple(a if k != dim else None for k, a in enumerate(axes))
            if axis != space or any(a is not None and a not in perms for a in others):
                continue
            s_moved = permute_axes(s, others, perms)
            cost += t.movedim(dim, 0).reshape(size, -1) @ s_moved.movedim(dim, 0).reshape(size, -1).T
    return cost


def _within_heads(cost: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """The permutation that sends target head a to source head ``heads[a]``, indices inside matched by ``cost``."""
    width = cost.shape[0] // len(heads)
    out = []
    for a, b in enumerate(heads.tolist()):
        block = cost[a * width : (a + 1) * width, b * width : (b + 1) * width]
        out.append(b * width + assignment(block))
    return torch.cat(out)


def match_towers(source: nn.Module, target: nn.Module, rounds: int, device: torch.device | str = "cpu") -> Matched:
    """The permutations relabelling ``source``'s image tower into ``target``'s (both open_clip ViT towers)."""
    device = torch.device(device)
    blocks = tower_blocks(target, "transfusion")
    parts = _tower_pieces(source, target, device)  # also refuses towers that differ in any parameter
    sizes = {axis: t.shape[dim] for t, _, axes in parts for dim, axis in enumerate(axes) if axis is not None}
    heads: dict[str, torch.Tensor] = {}
    for i, pair in enumerate(zip(blocks, tower_blocks(source, "transfusion"))):
        attns = [block_attention(b, "transfusion") for b in pair]
        spectra = [
            head_spectra(
                a.in_proj_weight.detach().to(device, torch.float32),
                a.out_proj.weight.detach().to(device, torch.float32),
                a.num_heads,
            )
            for a in attns
        ]
        heads[f"qk/{i}"] = heads[f"vo/{i}"] = assignment(torch.cdist(spectra[0], spectra[1]), maximize=False)
    order = [RESIDUAL, *(f"{kind}/{i}" for i in range(len(blocks)) for kind in ("hidden", "qk", "vo"))]
    perms: Perms = {}
    for done in range(1, rounds + 1):  # noqa: B007 (how many rounds ran is returned)
        before = dict(perms)
        for space in order:
            cost = _cost(space, sizes[space], parts, perms)
            perms[space] = _within_heads(cost, heads[space]) if space in heads else assignment(cost)
        if before and all(torch.equal(before[k], perms[k]) for k in perms):
            break
    return Matched(perms, done)
