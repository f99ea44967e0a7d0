"""``direct-residual``: ridge fits at every block boundary, so the target's residual-writing projections reproduce
what the source's fine-tuning did there.

merge-and-rebase's Ariadne transport (registered there as ``ariadne``, alias
``direct_residual``; its default ``block_boundary`` target, ``independent`` order, same
depth). No map carries the vector's entries; it is re-fitted as a functional effect:

1. The source's fine-tuned model is the source plus the vector. On the same unlabelled
   images, each block b's output tokens (the residual stream after it) are read from the
   source (B_b), the fine-tuned source (F_b) and the target (T_b).
2. The source's stream is mapped into the target's by the centred orthogonal Procrustes
   map U_b between B_b and T_b (:func:`~orthoxfer.transfers.theseus.fit_maps`), and the
   desired effect at the boundary is ``D_b = (F_b - B_b) U_b`` (rows are tokens).
3. Each residual-writing projection of block b in the target (``out_proj`` and
   ``c_proj``, or one of them: ``--direct-residual-components``), with inputs H (the
   target's own, unchanged), gets the ridge fit with intercept
   ``min ||H dW^T + 1 db^T - D_b||^2 + lambda ||dW||^2``, ``lambda =``
   ``--direct-residual-ridge * trace(H_c^T H_c) / width`` (the reference's
   ``ridge_relative``, 0.01; ``H_c`` centred).

As in the reference, every fit is made against the pristine target and every component
of a block against the same D_b (nothing is mounted between fits), so with both
components a block's effect is asked of each; lambda, chosen on validation as for every
row, scales the result. The result is a dense vector on the target's ``out_proj`` and
``c_proj`` weights (rectangular sites) with the bias corrections as ``extra``,
whatever sites the source vector was on; it reads images, never labels. ``learnt`` holds
each boundary's map ``boundary/<block>``; ``fit_residual`` is the mean over the fits of
``||H dW^T + 1 db^T - D_b|| / ||D_b||`` on the images fitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.models.modes import evaluating
from orthoxfer.models.tower_axes import image_tower, tower_blocks
from orthoxfer.problem.capture import capture_inputs
from orthoxfer.problem.tasks import image_features, pool_images
from orthoxfer.strategies.options import Option
from orthoxfer.strategies.procrustes import PROCRUSTES_RTOL
from orthoxfer.transfers.base import Pools, Transfer, Transferred, TransferSettings, activation_inputs, norm_ratio
from orthoxfer.transfers.theseus import Moments, fit_maps
from orthoxfer.vectors.sites import Site, default_root, sites_by_name
from orthoxfer.vectors.taskvector import TaskVector

RIDGE = Option(
    "direct_residual_ridge",
    0.01,
    "direct-residual: the ridge relative to the mean variance of a projection's inputs "
    "(lambda = this * trace(centred H^T H) / width; the reference's ridge_relative).",
    minimum=0,
)
COMPONENTS = Option(
    "direct_residual_components",
    "out_proj,c_proj",
    "direct-residual: the residual-writing projections fitted per block, each to the whole boundary effect "
    "(the reference's default: both).",
    choices=("out_proj,c_proj", "out_proj", "c_proj"),
)
BATCH = 32  # images per forward: memory only, the sums are the same
SITE_OF = {"out_proj": "attn.out", "c_proj": "mlp.c_proj.weight"}  # a component -> its site's name in a block


@contextmanager
def block_outputs(model: nn.Module, what: str) -> Iterator[dict[int, torch.Tensor]]:
    """While active, every forward of ``model`` fills ``{block: (tokens, width) outputs}`` of its image tower."""
    tower = image_tower(model)
    if not getattr(getattr(tower, "transformer", None), "batch_first", True):
        raise UsageError(
            f"{what} pairs block outputs with attention inputs token by token: it needs a batch-first tower"
        )
    seen: dict[int, torch.Tensor] = {}
    with ExitStack() as hooks:
        for i, block in enumerate(tower_blocks(tower, what)):

            def hook(module, args, out, i=i):
                seen[i] = out.detach().reshape(-1, out.shape[-1])

            hooks.enter_context(block.register_forward_hook(hook))
        yield seen


@torch.no_grad()
def boundary_maps(
    target: nn.Module, source: nn.Module, batches: list[torch.Tensor], what: str
) -> dict[int, torch.Tensor]:
    """Each block's centred Procrustes map carrying the source's output stream into the target's (rows: ``x_S U``)."""
    moments: dict[str, Moments] = {}
    with block_outputs(target, what) as bt, block_outputs(source, what) as bs:
        for images in batches:
            image_features(target, images)
            image_features(source, images)
            for i in bt:
                moments.setdefault(str(i), Moments()).add(bt[i], bs[i])
    return {int(k): u for k, u in fit_maps(moments, centre=True, rtol=float(PROCRUSTES_RTOL.default)).items()}


class Fit:
    """The running statistics of one projection's ridge fit: ``H^T H``, ``H^T D`` and ``D^T D``, with their sums."""

    def __init__(self) -> None:
        self.hh, self.hd, self.dd = Moments(), Moments(), Moments()

    def add(self, h: torch.Tensor, d: torch.Tensor) -> None:
        self.hh.add(h, h)
        self.hd.add(h, d)
        self.dd.add(d, d)

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(dW, db, relative residual)``: the ridge fit with intercept, through the eigenvectors of the centred
        ``H^T H`` (directions the inputs never take get no weight)."""
        hh, hd = self.hh.matrix(centre=True), self.hd.matrix(centre=True)
        vals, vecs = torch.linalg.eigh((hh + hh.T) / 2)
        denom = vals.clamp_min(0) + ridge * float(torch.trace(hh)) / len(hh)
        keep = denom > torch.finfo(denom.dtype).eps * denom.max().clamp_min(torch.finfo(denom.dtype).tiny)
        x = vecs @ (torch.where(keep, 1 / denom, 0)[:, None] * (vecs.T @ hd))  # (in, out): dW^T
        assert self.hd.sum_t is not None and self.hd.sum_s is not None  # set by the first add
        n = self.hd.count
        bias = self.hd.sum_s / n - x.T @ (self.hd.sum_t / n)
        residual = torch.trace(self.dd.matrix(centre=True)) - 2 * (x * hd).sum() + (x * (hh @ x)).sum()
        total = float(torch.trace(self.dd.matrix(centre=False)))
        return x.T.float(), bias.float(), (max(float(residual), 0.0) / total) ** 0.5 if total > 0 else 0.0


@torch.no_grad()
def boundary_fits(
    target: nn.Module,
    source: nn.Module,
    tuned: nn.Module,
    components: dict[int, list[Site]],
    maps: dict[int, torch.Tensor],
    batches: list[torch.Tensor],
    what: str,
) -> dict[str, Fit]:
    """``{site: Fit}`` of every component: its inputs in the target against its block's desired effect D_b."""
    fits: dict[str, Fit] = {}
    sites = [s for block in components.values() for s in block]
    with capture_inputs(target, sites) as h, block_outputs(source, what) as base, block_outputs(tuned, what) as done:
        for images in batches:
            for model in (target, source, tuned):
                image_features(model, images)
            for b, block in components.items():
                effect = (done[b] - base[b]) @ maps[b].to(done[b])
                for s in block:
                    fits.setdefault(s.name, Fit()).add(h[s.name], effect)
    return fits


def component_sites(model: nn.Module, chosen: str, what: str) -> dict[int, list[Site]]:
    """Each block's residual-writing projections named by ``chosen`` (``--direct-residual-components``), as sites."""
    prefix = ".".join(filter(None, (default_root(model), "transformer.resblocks")))
    blocks = range(len(tower_blocks(image_tower(model), what)))
    parts = chosen.split(",")
    return {b: sites_by_name(model, [f"{prefix}.{b}.{SITE_OF[p]}" for p in parts]) for b in blocks}


def bias_name(model: nn.Module, site: Site, what: str) -> str:
    """The name of the bias a projection's intercept is fitted into; a projection without one is refused."""
    name = site.param.removesuffix("weight") + "bias"
    if not isinstance(getattr(model.get_submodule(name.rsplit(".", 1)[0]), "bias", None), nn.Parameter):
        raise UsageError(f"{what} fits an intercept into each projection's bias, and {site.param!r} has none")
    return name


class DirectResidual(Transfer):
    name = "direct-residual"
    needs = "images"  # unlabelled images through three models: the source, the source fine-tuned, the target
    rectangular = True  # the vector is read through the fine-tuned source only: any sites
    options = (RIDGE, COMPONENTS)

    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        source, _, device, images = activation_inputs(self.name, vector, source, target, pools, settings)
        components = component_sites(target, settings.direct_residual_components, self.name)
        biases = {s.name: bias_name(target, s, self.name) for block in components.values() for s in block}
        batches = pool_images(images.values(), BATCH, device)
        tuned = vector.added_to_copy(source)
        with evaluating(target, source, tuned, device=device):
            maps = boundary_maps(target, source, batches, self.name)
            fits = boundary_fits(target, source, tuned, components, maps, batches, self.name)
        solved = {s: f.solve(settings.direct_residual_ridge) for s, f in fits.items()}
        result = TaskVector(
            {s: dw for s, (dw, _, _) in solved.items()}, extra={biases[s]: db for s, (_, db, _) in solved.items()}
        )
        diagnostics = {
            "norm_ratio": norm_ratio(result, vector),
            "fit_residual": sum(r for _, _, r in solved.values()) / len(solved),
        }
        return Transferred(result, learnt={f"boundary/{b}": u for b, u in maps.items()}, diagnostics=diagnostics)
