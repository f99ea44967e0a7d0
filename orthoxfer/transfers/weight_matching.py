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

The ``reference`` structure matches as TransFusion's released code does
(:func:`~orthoxfer.models.tower_axes.reference_axes`): a residual space per sub-layer with
the identity shortcuts left out, one ``heads/<block>`` space whose within-head
permutation q, k, v and ``out_proj`` share, heads matched on the *sum* of the per-matrix
spectrum distances (where ``exact`` takes the distance of the concatenated spectra),
every permutation starting at the identity and re-matched given all others in a seeded
random order each round (``torch.randperm``, as the reference orders its layers), and
attention biases left out of the heads' costs, as the reference leaves them. The
reference re-solves the head assignment every round of a first phase; the spectra no
other permutation changes, so here it is solved once. Its result need not preserve the
source's function: it is what the reference carries a vector by. Either structure
reports whether a round changed no permutation before the rounds ran out (``converged``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from orthoxfer.models.tower_axes import (
    RESIDUAL,
    Naming,
    Perms,
    block_attention,
    param_axes,
    permute_axes,
    pieces,
    reference_axes,
    tower_blocks,
)
from orthoxfer.vectors.taskvector import MismatchError

Piece = tuple[torch.Tensor, torch.Tensor, tuple[str | None, ...]]  # target part, source part, the space of each axis
STRUCTURES = ("exact", "reference")  # the function-preserving spaces, or those TransFusion's released code matches


@dataclass
class Matched:
    """Each space's permutation (``source[perm[i]]`` is matched to ``target[i]``), the rounds it took, and whether
    the last of them changed no permutation (else the rounds ran out first)."""

    perms: Perms
    rounds: int
    converged: bool


def assignment(cost: torch.Tensor, maximize: bool = True) -> torch.Tensor:
    """The Hungarian assignment of rows to columns as an index tensor (row i gets column ``out[i]``)."""
    _, cols = linear_sum_assignment(cost.detach().double().cpu().numpy(), maximize=maximize)
    return torch.from_numpy(cols).long()


def head_spectra(in_proj: torch.Tensor, out_proj: torch.Tensor, heads: int) -> torch.Tensor:
    """Per matrix (q, k, v rows, ``out_proj`` columns) and head, the head's singular values: (4, heads, width)."""
    d = out_proj.shape[0]
    per_head = [chunk.reshape(heads, d // heads, -1) for chunk in in_proj.chunk(3)]
    per_head.append(out_proj.reshape(d, heads, d // heads).transpose(0, 1))
    return torch.stack([torch.linalg.svdvals(w) for w in per_head])


def head_distances(target: torch.Tensor, source: torch.Tensor, structure: str) -> torch.Tensor:
    """(heads, heads) distances of two blocks' :func:`head_spectra`: of the concatenated spectra (``exact``), or the
    sum over the four matrices of each one's spectrum distance (``reference``)."""
    if structure == "reference":
        return torch.cdist(target, source).sum(0)
    return torch.cdist(target.transpose(0, 1).flatten(1), source.transpose(0, 1).flatten(1))


def _tower_pieces(source: nn.Module, target: nn.Module, device: torch.device, naming: Naming) -> list[Piece]:
    src = {n: p.detach().to(device, torch.float32) for n, p in source.named_parameters()}
    out = []
    for name, param in target.named_parameters():
        if name not in src or src[name].shape != param.shape:
            found = tuple(src[name].shape) if name in src else "none"
            raise MismatchError(f"parameter {name!r}: target shape {tuple(param.shape)}, source shape {found}")
        t = param.detach().to(device, torch.float32)
        out += [(pt, ps, axes) for (pt, axes), (ps, _) in zip(pieces(name, t, naming), pieces(name, src[name], naming))]
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


def match_towers(
    source: nn.Module,
    target: nn.Module,
    rounds: int,
    device: torch.device | str = "cpu",
    structure: str = "exact",
    seed: int = 0,
) -> Matched:
    """The permutations relabelling ``source``'s image tower into ``target``'s (both open_clip ViT towers), in the
    spaces of ``structure`` (one of :data:`STRUCTURES`); ``seed`` orders the reference's rounds."""
    if structure not in STRUCTURES:
        raise ValueError(f"unknown matching structure {structure!r}; one of {', '.join(STRUCTURES)}")
    device = torch.device(device)
    blocks = tower_blocks(target, "transfusion")
    reference = structure == "reference"
    naming: Naming = partial(reference_axes, depth=len(blocks)) if reference else param_axes
    parts = _tower_pieces(source, target, device, naming)  # also refuses towers that differ in any parameter
    if reference:  # the reference leaves attention biases out of its heads' costs
        parts = [p for p in parts if not (p[0].dim() == 1 and (p[2][0] or "").startswith("heads/"))]
    sizes = {axis: t.shape[dim] for t, _, axes in parts for dim, axis in enumerate(axes) if axis is not None}
    heads: dict[str, torch.Tensor] = {}
    for i, pair in enumerate(zip(blocks, tower_blocks(source, "transfusion"))):
        attns = [block_attention(b, "transfusion") for b in pair]
        spectra_t, spectra_s = (
            head_spectra(
                a.in_proj_weight.detach().to(device, torch.float32),
                a.out_proj.weight.detach().to(device, torch.float32),
                a.num_heads,
            )
            for a in attns
        )
        assigned = assignment(head_distances(spectra_t, spectra_s, structure), maximize=False)
        heads.update({f"heads/{i}": assigned} if reference else {f"qk/{i}": assigned, f"vo/{i}": assigned})
    if reference:  # every permutation starts at the identity; a head space at its matched heads, indices in order
        order = sorted(sizes)
        perms: Perms = {
            k: _within_heads(torch.eye(n), heads[k]) if k in heads else torch.arange(n) for k, n in sizes.items()
        }
    else:
        order = [RESIDUAL, *(f"{kind}/{i}" for i in range(len(blocks)) for kind in ("hidden", "qk", "vo"))]
        perms = {}
    generator = torch.Generator().manual_seed(seed)
    for done in range(1, rounds + 1):
        before = dict(perms)
        for space in [order[i] for i in torch.randperm(len(order), generator=generator)] if reference else order:
            cost = _cost(space, sizes[space], parts, perms)
            perms[space] = _within_heads(cost, heads[space]) if space in heads else assignment(cost)
        if before.keys() == perms.keys() and all(torch.equal(before[k], perms[k]) for k in perms):
            return Matched(perms, done, converged=True)
    return Matched(perms, rounds, converged=False)
