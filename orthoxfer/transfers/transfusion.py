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
"""

from __future__ import annotations

import torch
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.models.tower_axes import Perms, permute_axes, permute_param, site_axes
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


def _in_tower(name: str, root: str) -> str:
    if root and not name.startswith(root + "."):
        raise UsageError(
            f"transfusion relabels the image tower only; the vector carries {name!r} outside it: "
            f"carry a vector of {root}.* parameters"
        )
    return name.removeprefix(root + ".") if root else name


def relabel(vector: TaskVector, model: nn.Module, perms: Perms) -> TaskVector:
    """``vector`` with every tensor's tower axes relabelled by ``perms`` (sites and ``extra``); LoRA stays factored."""
    root = default_root(model)
    axes = {s.name: site_axes(s, _in_tower(s.param, root)) for s in vector.check_fits(model)}
    extra = {n: permute_param(_in_tower(n, root), t, perms) for n, t in vector.extra.items()}
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
    for kind, prefixes in (("residual", ("residual",)), ("heads", ("qk/", "vo/")), ("hidden", ("hidden/",))):
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

    def __init__(self) -> None:
        self._matched: dict[tuple, tuple[nn.Module, nn.Module, Matched]] = {}  # the models kept: their ids stay theirs

    def match(self, source: nn.Module, target: nn.Module, settings: TransferSettings) -> Matched:
        key = (id(source), id(target), settings.transfusion_rounds, settings.device)
        if key not in self._matched:
            root = default_root(target)
            towers = [m.get_submodule(root) if root else m for m in (source, target)]
            matched = match_towers(towers[0], towers[1], settings.transfusion_rounds, settings.device)
            self._matched[key] = (source, target, matched)
        return self._matched[key][2]

    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        matched = self.match(require_source(source, self.name), target, settings)
        result = relabel(vector, target, matched.perms)
        diagnostics = {"norm_ratio": norm_ratio(result, vector), **moved(matched.perms), "rounds": matched.rounds}
        return Transferred(result, learnt={f"perm/{k}": p for k, p in matched.perms.items()}, diagnostics=diagnostics)
