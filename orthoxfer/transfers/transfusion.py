"""``transfusion``: data-free; relabel the source vector by the permutations that align the two base towers.

TransFusion (Re-Basin of task vectors) finds, from the pre-trained weights alone, the
coordinate permutations that carry the source's image tower closest to the target's
(:mod:`.weight_matching`: heads by their singular-value spectra, then neurons within
matched heads, the residual stream and the MLP hidden units by weight matching, one
residual permutation for every block). The task vector is relabelled by the same
permutations: every site (rows and columns by their own spaces, so a q/k/v site may be
two-sided) and every ``extra`` parameter of a ``full`` vector. A permutation keeps every
entry, so the norm and each site's rank are kept; LoRA factors stay factored. A
permutation is an orthogonal matrix: this is the discrete end of orthoxfer's family.

``transfusion-reference`` is the same method in the spaces TransFusion's released code
matches (:mod:`.weight_matching`'s ``reference`` structure: a residual permutation per
sub-layer, one within-head permutation for q, k, v and ``out_proj``, heads on summed
spectrum distances, up to ``--transfusion-reference-rounds`` (100, the reference's) rounds
in a seeded random order), so a benchmark can show the rival as its authors run it
beside orthoxfer's exact, function-preserving version. It is a registered variant, not
a flag of ``transfusion``, so each gets its own bench and study rows, with controls and
seeds, and each row's record names its own settings. Both report ``converged``.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.models.tower_axes import (
    Naming,
    Perms,
    image_tower,
    param_axes,
    permute_axes,
    permute_param,
    reference_axes,
    site_axes,
    tower_blocks,
)
from orthoxfer.strategies.options import Option
from orthoxfer.transfers.base import Pools, Transfer, Transferred, TransferSettings, norm_ratio, require_source
from orthoxfer.transfers.weight_matching import Matched, match_towers
from orthoxfer.vectors.sites import default_root
from orthoxfer.vectors.taskvector import TaskVector

ROUNDS = Option(
    "transfusion_rounds",
    20,
    "transfusion: at most this many rounds of weight matching (the first matches "
    "each permutation from what is already matched, residual stream first; later ones re-match each given "
    "all others, until a round changes none).",
    minimum=1,
)
REFERENCE_ROUNDS = Option(
    "transfusion_reference_rounds",
    100,
    "transfusion-reference: at most this many rounds of weight matching, each re-matching every "
    "permutation given all others in a seeded random order, until a round changes none (the reference's 100).",
    minimum=1,
)


def _in_tower(name: str, root: str) -> str:
    if root and not name.startswith(root + "."):
        raise UsageError(
            f"transfusion relabels the image tower only; the vector carries {name!r} outside it: "
            f"carry a vector of {root}.* parameters"
        )
    return name.removeprefix(root + ".") if root else name


def relabel(vector: TaskVector, model: nn.Module, perms: Perms, naming: Naming = param_axes) -> TaskVector:
    """``vector`` with every tensor's tower axes relabelled by ``perms`` (sites and ``extra``), each axis in the space
    ``naming`` gives it; LoRA stays factored."""
    root = default_root(model)
    axes = {s.name: site_axes(s, _in_tower(s.param, root), naming) for s in vector.check_fits(model)}
    extra = {n: permute_param(_in_tower(n, root), t, perms, naming) for n, t in vector.extra.items()}
    meta = dict(vector.meta)
    if vector.lora:  # dW = s B A: B's rows are the site's rows, A's columns its columns
        lora = {
            s: (permute_axes(a, (None, axes[s][1]), perms), permute_axes(b, (axes[s][0], None), perms))
            for s, (a, b) in vector.lora.items()
        }
        return TaskVector(lora=lora, scale=vector.scale, extra=extra, meta=meta)
    return TaskVector({s: permute_axes(d, axes[s], perms) for s, d in vector.dense.items()}, extra=extra, meta=meta)


def moved(perms: Perms) -> dict[str, float]:
    """How far each permutation is from the identity: the fraction of indices it moves, per space and by kind."""
    fractions = {k: float((p != torch.arange(len(p))).double().mean()) for k, p in perms.items()}
    out = {f"moved/{k}": v for k, v in fractions.items()}
    for kind, prefixes in (("residual", ("residual",)), ("heads", ("qk/", "vo/", "heads/")), ("hidden", ("hidden/",))):
        chosen = [v for k, v in fractions.items() if k.startswith(prefixes)]
        out[f"moved_{kind}"] = sum(chosen) / len(chosen)
    out["moved_mean"] = sum(fractions.values()) / len(fractions)
    return out


class TransFusion(Transfer):
    """One instance matches a pair of models once, however many vectors it carries between them."""

    name = "transfusion"
    needs = "none"
    rectangular = True  # a permutation relabels each axis by its own space, rectangular MLP weights included
    options = (ROUNDS,)
    structure: ClassVar[str] = "exact"  # a weight_matching.STRUCTURES

    def __init__(self) -> None:
        self._matched: dict[tuple, tuple[nn.Module, nn.Module, Matched]] = {}  # the models kept: their ids stay theirs

    def rounds(self, settings: TransferSettings) -> int:
        return settings.transfusion_rounds

    def naming(self, model: nn.Module) -> Naming:
        """The space of each axis of the tower's parameters in this method's structure."""
        return param_axes

    def match(self, source: nn.Module, target: nn.Module, settings: TransferSettings) -> Matched:
        key = (id(source), id(target), self.rounds(settings), settings.seed, settings.device)
        if key not in self._matched:
            rounds = self.rounds(settings)
            source_tower, target_tower = image_tower(source), image_tower(target)
            matched = match_towers(source_tower, target_tower, rounds, settings.device, self.structure, settings.seed)
            self._matched[key] = (source, target, matched)
        return self._matched[key][2]

    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        matched = self.match(require_source(source, self.name), target, settings)
        result = relabel(vector, target, matched.perms, self.naming(target))
        diagnostics = {
            "norm_ratio": norm_ratio(result, vector),
            **moved(matched.perms),
            "rounds": matched.rounds,
            "converged": matched.converged,
        }
        return Transferred(result, learnt={f"perm/{k}": p for k, p in matched.perms.items()}, diagnostics=diagnostics)


class TransFusionReference(TransFusion):
    """TransFusion in the spaces, head costs and round order of its released code (see the module docstring)."""

    name = "transfusion-reference"
    options = (REFERENCE_ROUNDS,)
    structure = "reference"

    def rounds(self, settings: TransferSettings) -> int:
        return settings.transfusion_reference_rounds

    def naming(self, model: nn.Module) -> Naming:
        return partial(reference_axes, depth=len(tower_blocks(image_tower(model), self.name)))
