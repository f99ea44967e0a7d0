"""``bico``: two-sided maps from activations (the input side) and gradients (the output side) on calibration images.

merge-and-rebase's newest transport (arXiv 2605.28444, registered there as ``bico``): one
forward and one backward pass per calibration batch, orthogonal Procrustes on each side
of every site. Why both: a fine-tuning update is a sum of outer products
``dW = -lr * sum g x^T`` of a layer's output gradients g and its inputs x, so the row
space of a task vector lives where the inputs live and its column space where the
output gradients live. theseus matches the outputs' activations instead, which for an
expanding layer (``c_fc``) span only d + 1 of 4d dimensions; the gradients reach all of
them.

Per site W (out x in), with the project's convention ``h_S = U_in h_T`` and
``y_S = U_out y_T`` (the vector carried as ``U_out^T dW_S U_in``):

- ``U_in``: Procrustes between the two models' inputs to the site on the same images
  (as theseus computes it, from forward hooks).
- ``U_out``: each model's weight gradient on a calibration batch, ``G = sum_t g_t x_t^T``,
  relates as ``G_S = U_out G_T U_in^T`` when the target is the source in other
  coordinates; with ``U_in`` fitted, the columns of ``G_T U_in^T`` and of ``G_S`` are
  paired samples of the output space, and Procrustes on them gives ``U_out``. Each
  backward of ``--bico-grad-batch`` images gives ``in`` samples per site.

The loss differentiated is the energy of the final token features,
``0.5 * sum_tokens ||ln_post(h)||^2`` (:func:`energy`): it needs no labels and no head
(the source has no zero-shot head in a transfer), and it has the same form in both
models, so the gradients of a function-preserving relabelling are relabelled gradients. (Which loss BiCo's paper differentiates was not available here; this choice is
orthoxfer's and is named so.) Only the images of the target's few-shot pools are read,
never their labels. ``extra`` parameters of a ``full`` vector are added unchanged, as
every method adds them. ``learnt`` holds ``in/<site>`` and ``out/<site>``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from orthoxfer.alignment.artifact import rotate
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
from orthoxfer.transfers.theseus import SOLVE, Moments
from orthoxfer.vectors.sites import Site
from orthoxfer.vectors.taskvector import TaskVector

GRAD_BATCH = Option(
    "bico_grad_batch",
    8,
    "bico: images per backward pass; each gives every site `in` gradient samples for its output map, "
    "so smaller batches identify wider outputs (an MLP's 4d units) from fewer images.",
    minimum=1,
)
RTOL = Option(
    "bico_rtol",
    PROCRUSTES_RTOL.default,
    "bico: singular values of a cross-covariance at or below this times the largest leave its map "
    "free there; it is completed by the map closest to I.",
    minimum=0,
)
BATCH = 32  # images per forward while collecting the input statistics: memory only, the sums are the same


def energy(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The label-free loss whose gradients are matched: half the squared norm of every token's final features.

    Every token, not the pooled embedding alone: the last block's MLP reaches the
    embedding through the class token only, so the embedding's gradients would give that
    layer one sample per image (3,072 units of ViT-B/32 would need 3,072 images); the
    tokens after ``ln_post`` give one per token. A model without ``visual.ln_post`` uses its
    image features.
    """
    seen: list[torch.Tensor] = []
    norm = getattr(getattr(model, "visual", None), "ln_post", None)
    if not isinstance(norm, nn.Module):
        return 0.5 * image_features(model, images).float().pow(2).sum()
    handle = norm.register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        image_features(model, images)
    finally:
        handle.remove()
    return 0.5 * torch.stack([out.float().pow(2).sum() for out in seen]).sum()


@contextmanager
def _differentiable(params: list[nn.Parameter]):
    """Gradients for these parameters for the block, whatever the model's training state froze."""
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def weight_gradients(model: nn.Module, sites: list[Site], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{site: dL/dW}`` (rows x in) of the energy loss on ``images``: one forward and one backward."""
    names = list(dict.fromkeys(s.param for s in sites))
    params = [model.get_parameter(n) for n in names]
    with _differentiable(params), torch.enable_grad():
        grads = torch.autograd.grad(energy(model, images), params, allow_unused=True)
    by_param = {n: (g if g is not None else torch.zeros_like(p)) for n, p, g in zip(names, params, grads)}
    return {s.name: by_param[s.param][s.start : s.stop].detach() for s in sites}


@torch.no_grad()
def input_moments(target: nn.Module, source: nn.Module, sites: list[Site], batches: list[torch.Tensor]):
    """``{site: Moments}`` of both models' inputs to every site over ``batches``."""
    moments: dict[str, Moments] = {}
    with capture_inputs(target, sites) as xt, capture_inputs(source, sites) as xs:
        for images in batches:
            image_features(target, images)
            image_features(source, images)
            for s in sites:
                moments.setdefault(s.name, Moments()).add(xt[s.name], xs[s.name])
    return moments


def output_moments(
    target: nn.Module,
    source: nn.Module,
    sites: list[Site],
    batches: list[torch.Tensor],
    ins: dict[str, torch.Tensor],
) -> dict[str, Moments]:
    """``{site: Moments}`` of the paired output-space samples: columns of ``G_T U_in^T`` and of ``G_S``."""
    moments: dict[str, Moments] = {}
    for images in batches:
        gt, gs = weight_gradients(target, sites, images), weight_gradients(source, sites, images)
        for s in sites:
            u_in = ins[s.name].to(gt[s.name].device, torch.float64)
            moments.setdefault(s.name, Moments()).add(u_in @ gt[s.name].double().T, gs[s.name].double().T)
    return moments


def fit_maps(moments: dict[str, Moments], rtol: float) -> tuple[dict[str, torch.Tensor], float]:
    """The orthogonal map of every key (float32, CPU), and the fraction of all their dimensions the data identified.

    As theseus fits its maps (batched polar factors, ``SOLVE`` of one width at a time),
    plus the identified fraction: below 1, the calibration set left directions free
    (completed toward I), and more images (or smaller gradient batches) would pin them.
    One direction per site that writes into the residual stream (``out``, ``c_proj``) is
    free whatever the data: the LayerNorms that read the stream take its mean away, so no
    gradient has a part along the all-ones direction, and neither model can tell it apart;
    the completion maps it to itself.
    """
    maps: dict[str, torch.Tensor] = {}
    identified = total = 0
    for dim in dict.fromkeys(m.matrix(centre=False).shape[0] for m in moments.values()):
        keys = [k for k, m in moments.items() if m.matrix(centre=False).shape[0] == dim]
        for start in range(0, len(keys), SOLVE):
            chunk = keys[start : start + SOLVE]
            fit = polar_transform(torch.stack([moments[k].matrix(False) for k in chunk]), rtol)
            maps.update(zip(chunk, fit.transforms.float().cpu()))
            identified, total = identified + sum(fit.rank), total + dim * len(chunk)
    return maps, identified / total


def _distance(u: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(u.double() - torch.eye(len(u), dtype=torch.float64)))


class BiCo(Transfer):
    name = "bico"
    needs = "images"  # unlabelled images, and one backward pass per --bico-grad-batch of them in each model
    rectangular = True
    options = (GRAD_BATCH, RTOL)

    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        source, sites, device, images = activation_inputs(self.name, vector, source, target, pools, settings)
        with evaluating(target, source, device=device):
            inputs = input_moments(target, source, sites, pool_images(images.values(), BATCH, device))
            ins, in_identified = fit_maps(inputs, settings.bico_rtol)
            grad_batches = pool_images(images.values(), settings.bico_grad_batch, device)
            outs, out_identified = fit_maps(
                output_moments(target, source, sites, grad_batches, ins), settings.bico_rtol
            )
        result = rotate(vector, ins, outs)
        distances = [_distance(u) for u in (*ins.values(), *outs.values())]
        diagnostics = {
            "norm_ratio": norm_ratio(result, vector),
            "dist_identity_mean": sum(distances) / len(distances),
            "backward_passes": 2 * len(grad_batches),
            "identified_in": in_identified,  # the fraction of the input maps' dimensions the activations decided
            "identified_out": out_identified,  # ... of the output maps' that the gradients decided
        }
        learnt = {**{f"in/{n}": u for n, u in ins.items()}, **{f"out/{n}": u for n, u in outs.items()}}
        return Transferred(result, learnt=learnt, diagnostics=diagnostics)
