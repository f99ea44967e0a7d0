"""``theseus``: closed-form two-sided maps from the two models' activations on unlabelled images.

As merge-and-rebase runs it (arXiv 2602.12952): per site W (out x in), the two models
see the same images; their inputs to the site relate by ``h_S = U_in h_T`` and their
outputs by ``y_S = U_out y_T`` (the project's direction convention, on each side). Each
map is the orthogonal Procrustes solution between the two models' activations, by the
closed form of :mod:`orthoxfer.strategies.procrustes` and its rule for the directions
the data leaves free (:func:`~orthoxfer.strategies.procrustes.polar_transform`, completed
toward the identity), and the vector is carried two-sidedly,
``dW_T = U_out^T dW_S U_in`` (:func:`~orthoxfer.alignment.artifact.rotate`). One map per
side is what lets rectangular sites through: ``c_fc`` (4d x d) gets a d x d input map and
a 4d x 4d output map. No gradient, no labels: only the images of the target's few-shot
pools (their training part) are read.

A site's inputs are captured by forward hooks on both models
(:func:`~orthoxfer.problem.capture.capture_inputs`), its outputs computed from them with
the model's own weight and bias (q, k and v have no module of their own to hook); an
MLP's hidden units are measured after the activation (:func:`output_space`).
``--theseus-centre`` subtracts each model's mean activation first, so the maps align
the activations' spread and not their offsets; a LayerNorm-fed layer's centred outputs
then lie in a hyperplane, and one direction of its output map is left to the completion.
The ``extra`` parameters of a ``full`` vector (biases, LayerNorms, embeddings) are added
unchanged, as every alignment adds them. ``learnt`` holds ``in/<site>`` and ``out/<site>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.alignment.artifact import rotate
from orthoxfer.errors import OrthoxferError
from orthoxfer.models.modes import evaluating
from orthoxfer.problem.capture import capture_inputs
from orthoxfer.problem.tasks import image_features, pool_images
from orthoxfer.strategies.options import Option
from orthoxfer.strategies.procrustes import PROCRUSTES_RTOL, polar_transform
from orthoxfer.transfers.base import (
    Pools,
    Transfer,
    Transferred,
    TransferSettings,
    activation_inputs,
    norm_ratio,
)
from orthoxfer.vectors.sites import Site, read_site, sites_by_name
from orthoxfer.vectors.taskvector import TaskVector

CENTRE = Option("theseus_centre", False, "theseus: subtract each model's mean activation before the cross-covariance.")
RTOL = Option(
    "theseus_rtol",
    PROCRUSTES_RTOL.default,
    "theseus: singular values of a cross-covariance at or below this "
    "times the largest leave its map free there; it is completed by the map closest to I.",
    minimum=0,
)
BATCH = 32  # images per forward while collecting statistics: memory only, the sums are the same
SOLVE = 16  # maps per batched SVD: at 4d = 3072 (ViT-B/32's MLP) 16 of them and their factors take about 4 GB


@dataclass
class Moments:
    """Running ``X_T^T X_S`` over tokens, each side's sum and the count: the cross-covariance, centred or not."""

    cross: torch.Tensor | None = None  # set by the first add
    sum_t: torch.Tensor | None = None
    sum_s: torch.Tensor | None = None
    count: int = 0

    def add(self, xt: torch.Tensor, xs: torch.Tensor) -> None:
        xt, xs = xt.double(), xs.double()
        cross, sum_t, sum_s = xt.T @ xs, xt.sum(0), xs.sum(0)
        if self.cross is not None and self.sum_t is not None and self.sum_s is not None:
            cross, sum_t, sum_s = self.cross + cross, self.sum_t + sum_t, self.sum_s + sum_s
        self.cross, self.sum_t, self.sum_s = cross, sum_t, sum_s
        self.count += len(xt)

    def matrix(self, centre: bool) -> torch.Tensor:
        if self.cross is None or self.sum_t is None or self.sum_s is None:
            raise OrthoxferError("theseus saw no activations at a site: its pools hold no image")
        if not centre:
            return self.cross
        return self.cross - torch.outer(self.sum_t, self.sum_s) / self.count


def site_bias(model: nn.Module, site: Site) -> torch.Tensor | None:
    """The bias rows that go with the site's weight rows (``in_proj_bias`` for q/k/v, ``<linear>.bias``), if any."""
    path = site.param.removesuffix("weight") + "bias"
    try:
        return model.get_parameter(path)[site.start : site.stop]
    except AttributeError:  # a Linear without bias
        return None


def output_space(site: Site) -> str:
    """The key of the space a site's outputs are measured in: its own outputs, except an MLP's expanding layer.

    ``c_fc``'s pre-activations span at most d + 1 of its 4d dimensions (a d-wide input
    and a bias), so they cannot tell its units apart; its output map is fitted on the
    units after the activation, which ``c_proj`` reads (a relabelling of units commutes
    with the elementwise GELU). ``c_fc``'s output map and ``c_proj``'s input map are then
    one map, as the units are one space.
    """
    if site.name.endswith(".mlp.c_fc.weight"):
        return "in/" + site.name.replace(".mlp.c_fc.", ".mlp.c_proj.")
    return "out/" + site.name


@torch.no_grad()
def site_moments(
    target: nn.Module, source: nn.Module, sites: list[Site], batches: list[torch.Tensor]
) -> dict[str, Moments]:
    """``{key: Moments}`` of both models' activations in every space ``sites`` read from or write to, over ``batches``.

    Keys are ``in/<site>`` (a site's inputs) and :func:`output_space` (its outputs).
    """
    spaces = {s.name: output_space(s) for s in sites}
    hidden = [n.removeprefix("in/") for n in spaces.values() if n.startswith("in/")]
    captured = sites + [s for s in sites_by_name(target, list(dict.fromkeys(hidden))) if s not in sites]
    moments: dict[str, Moments] = {}
    with capture_inputs(target, captured) as xt, capture_inputs(source, captured) as xs:
        for images in batches:
            image_features(target, images)
            image_features(source, images)
            for c in captured:  # the sites' inputs, and the hidden units of an MLP whose c_fc is carried
                moments.setdefault(f"in/{c.name}", Moments()).add(xt[c.name], xs[c.name])
            for s in (s for s in sites if spaces[s.name].startswith("out/")):
                outputs = [
                    F.linear(x[s.name], read_site(m, s), site_bias(m, s)) for m, x in ((target, xt), (source, xs))
                ]
                moments.setdefault(spaces[s.name], Moments()).add(*outputs)
    return moments


def fit_maps(moments: dict[str, Moments], centre: bool, rtol: float) -> dict[str, torch.Tensor]:
    """The orthogonal map of every key (float32, on the CPU): batched polar factors, ``SOLVE`` maps of one width at a time."""
    maps: dict[str, torch.Tensor] = {}
    for dim in dict.fromkeys(m.matrix(centre=False).shape[0] for m in moments.values()):
        keys = [k for k, m in moments.items() if m.matrix(centre=False).shape[0] == dim]
        for start in range(0, len(keys), SOLVE):
            chunk = keys[start : start + SOLVE]
            fit = polar_transform(torch.stack([moments[k].matrix(centre) for k in chunk]), rtol)
            maps.update(zip(chunk, fit.transforms.float().cpu()))
    return maps


class Theseus(Transfer):
    name = "theseus"
    needs = "images"
    rectangular = True
    options = (CENTRE, RTOL)

    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        source, sites, device, images = activation_inputs(self.name, vector, source, target, pools, settings)
        batches = pool_images(images.values(), BATCH, device)
        with evaluating(target, source, device=device):
            moments = site_moments(target, source, sites, batches)
        maps = fit_maps(moments, settings.theseus_centre, settings.theseus_rtol)
        ins = {s.name: maps[f"in/{s.name}"] for s in sites}
        outs = {s.name: maps[output_space(s)] for s in sites}
        result = rotate(vector, ins, outs)
        distances = [
            float(torch.linalg.matrix_norm(u.double() - torch.eye(len(u), dtype=torch.float64))) for u in maps.values()
        ]
        diagnostics = {"norm_ratio": norm_ratio(result, vector), "dist_identity_mean": sum(distances) / len(distances)}
        learnt = {**{f"in/{n}": u for n, u in ins.items()}, **{f"out/{n}": u for n, u in outs.items()}}
        return Transferred(result, learnt=learnt, diagnostics=diagnostics)
