"""Sites: the weight matrices where a task vector lives and gets its own maps.

A site is named by its parameter path plus a part. ``nn.MultiheadAttention`` packs
q, k and v into one ``in_proj_weight`` of shape (3d, d); orthoxfer addresses them
as three sites (``<mha>.q``, ``<mha>.k``, ``<mha>.v``) that are row-views into that
parameter, and ``out_proj.weight`` as ``<mha>.out``. An ``nn.Linear`` outside
attention is the site ``<linear>.weight``. Reading a site returns a view and writing
one touches exactly its rows, so the rest of the parameter is never disturbed.

Most sites are square, and one orthogonal U per site carries them (``U^T dW U``).
The MLP weights of a ViT (``c_fc``: 4d x d, ``c_proj``: d x 4d) are rectangular: only
a method with an input-side and an output-side map per site carries them
(``U_out^T dW U_in``), so they are reached only by the ``mlp`` selector or by name, never
by ``all`` or ``linear``, and a method with one U per site refuses them
(:func:`require_square`).
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass

import torch
from torch import nn

from orthoxfer.errors import UsageError

SELECTORS = ("attn", "attn-qkv", "attn-out", "mlp", "linear", "all")
_QKV = ("q", "k", "v")


class SiteError(UsageError):
    """A selector, site name or shape that does not fit the model at hand."""


@dataclass(frozen=True)
class Site:
    """One matrix: rows ``[start, stop)`` of the parameter ``param``, ``dim`` columns (the input width)."""

    name: str
    param: str
    start: int
    stop: int
    dim: int
    part: str  # q | k | v | out | weight

    @property
    def shape(self) -> tuple[int, int]:
        return (self.stop - self.start, self.dim)

    @property
    def square(self) -> bool:
        return self.stop - self.start == self.dim

    @property
    def block(self) -> str:
        """The name shared by all sites of one attention module (used to tie U's)."""
        return self.name.rsplit(".", 1)[0]


def default_root(model: nn.Module) -> str:
    """CLIP-style models carry task vectors in the image tower; anything else in full."""
    return "visual" if isinstance(getattr(model, "visual", None), nn.Module) else ""


def _candidates(model: nn.Module, root: str) -> list[Site]:
    base = model.get_submodule(root) if root else model
    prefix = f"{root}." if root else ""
    sites: list[Site] = []
    inside_mha: set[int] = set()
    for path, module in base.named_modules():
        full = prefix + path
        if isinstance(module, nn.MultiheadAttention):
            inside_mha.add(id(module.out_proj))
            d = module.embed_dim
            if not module._qkv_same_embed_dim or module.in_proj_weight is None:
                raise SiteError(f"{full}: attention with separate k/v dims has no square q/k/v sites")
            for i, part in enumerate(_QKV):
                sites.append(Site(f"{full}.{part}", f"{full}.in_proj_weight", i * d, (i + 1) * d, d, part))
            sites.append(Site(f"{full}.out", f"{full}.out_proj.weight", 0, d, d, "out"))
    for path, module in base.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in inside_mha:
            out_f, in_f = module.weight.shape
            full = prefix + path
            sites.append(Site(f"{full}.weight", f"{full}.weight", 0, out_f, in_f, "weight"))
    return sites


def _matches(site: Site, selector: str) -> bool:
    if selector == "mlp":  # open_clip's c_fc and c_proj, inside each block's ``mlp``
        return site.part == "weight" and "mlp" in site.name.split(".")
    if not site.square and selector in SELECTORS:  # rectangular sites only by ``mlp`` or by name
        return False
    if selector == "all":
        return True
    if selector == "attn":
        return site.part in (*_QKV, "out")
    if selector == "attn-qkv":
        return site.part in _QKV
    if selector == "attn-out":
        return site.part == "out"
    if selector == "linear":
        return site.part == "weight"
    return fnmatch.fnmatchcase(site.name, selector)


def find_sites(model: nn.Module, selector: str = "attn", root: str | None = None) -> list[Site]:
    """Sites of ``model`` chosen by ``selector``, in model order.

    ``selector`` is one of :data:`SELECTORS` (``mlp``: the rectangular MLP weights; every
    other selector picks square sites only), a glob over site names
    (``visual.transformer.resblocks.1*.attn.q``), or several of those joined by commas.
    ``root`` limits the search to a submodule; by default the image tower of a
    CLIP-style model, the whole model otherwise. Globs match full names and search
    the whole model when ``root`` is not given, so they can reach any tower.
    """
    parts = [s.strip() for s in selector.split(",") if s.strip()]
    if not parts:
        raise SiteError(f"empty site selector; use one of {', '.join(SELECTORS)} or a glob")
    globbing = all(p not in SELECTORS for p in parts)
    if root is None:
        root = "" if globbing else default_root(model)
    candidates = _candidates(model, root)
    chosen = [s for s in candidates if any(_matches(s, p) for p in parts)]
    if not chosen:
        raise SiteError(
            f"selector {selector!r} matches no site of this model; use one of {', '.join(SELECTORS)} "
            f"or a glob over names such as {candidates[0].name if candidates else '<none found>'!r}"
        )
    return chosen


def require_square(shapes: dict[str, tuple[int, int]], method: str) -> None:
    """Refuse rectangular sites (``{site: shape}``) for a method whose map is one d x d U per site."""
    for name, (rows, cols) in shapes.items():
        if rows != cols:
            raise SiteError(
                f"{method} carries square sites only, and site {name!r} is {rows} x {cols}: use a vector on "
                "square sites (--sites attn) or a method with two-sided maps (theseus)"
            )


def sites_by_name(model: nn.Module, names: list[str]) -> list[Site]:
    """Resolve stored site names (from a task vector) back to this model's sites."""
    known = {s.name: s for s in _candidates(model, "")}
    missing = [n for n in names if n not in known]
    if missing:
        raise SiteError(f"site {missing[0]!r} does not exist in this model")
    return [known[n] for n in names]


def _param(model: nn.Module, site: Site) -> nn.Parameter:
    return model.get_parameter(site.param)


def read_site(model: nn.Module, site: Site) -> torch.Tensor:
    """A view of the site's rows: writes through it reach the model."""
    return _param(model, site)[site.start : site.stop]


@torch.no_grad()
def write_site(model: nn.Module, site: Site, value: torch.Tensor) -> None:
    read_site(model, site).copy_(value)


def matrix_shape(t: torch.Tensor) -> tuple[int, int]:
    """The (rows, columns) of a site's matrix; anything that is not 2-D is refused here, not further on."""
    rows, cols = t.shape
    return rows, cols


def site_shapes(model: nn.Module, sites: list[Site]) -> dict[str, tuple[int, int]]:
    return {s.name: matrix_shape(read_site(model, s)) for s in sites}


@functools.lru_cache(maxsize=64)
def _slices(sites: tuple[Site, ...], counts: tuple[int, ...]) -> tuple[tuple[tuple[str, int, int], ...], ...]:
    """For stacks of ``counts[i]`` consecutive sites: each stack's runs ``(param, first row, end row)``.

    A run is consecutive sites of one parameter whose rows follow each other, so one
    contiguous slice of the stack. Computed once per layout, not per step.
    """
    out, pos = [], 0
    for count in counts:
        runs: list[list] = []
        for site in sites[pos : pos + count]:
            if runs and runs[-1][0] == site.param and runs[-1][2] == site.start:
                runs[-1][2] = site.stop
            else:
                runs.append([site.param, site.start, site.stop])
        out.append(tuple(tuple(r) for r in runs))
        pos += count
    return tuple(out)


def param_overrides(
    model: nn.Module, sites: list[Site], deltas: list[torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """``{param path: W + delta}`` for ``torch.func.functional_call``, differentiable in ``deltas``.

    Each entry of ``deltas`` is one site's (rows, d) delta or a stack (n, rows, d) of the
    next n sites' deltas, in the order of ``sites``. Keys are prefixed with ``prefix`` for a
    wrapper module. Sites of one parameter are tiled in row order with zero blocks for
    rows no site covers. In a stack, consecutive sites of one parameter whose rows follow
    each other (q, k, v of an ``in_proj_weight``) are one contiguous slice, so their delta
    is a view and needs no ``cat``; the stack is cut with one ``split``, whose backward
    gathers the gradient in one pass (a view per site would cost a full-size zero
    tensor per site in the backward).
    """
    stacks = [delta if delta.dim() == 3 else delta.unsqueeze(0) for delta in deltas]
    by_param: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for stack, runs in zip(stacks, _slices(tuple(sites), tuple(len(s) for s in stacks))):
        chunks = stack.reshape(-1, stack.shape[-1]).split([stop - start for _, start, stop in runs])
        for (path, start, _), chunk in zip(runs, chunks):
            by_param.setdefault(path, []).append((start, chunk))
    out: dict[str, torch.Tensor] = {}
    for path, items in by_param.items():
        weight = model.get_parameter(path)
        items.sort(key=lambda item: item[0])
        pieces: list[torch.Tensor] = []
        row = 0
        for start, chunk in items:
            if start > row:
                pieces.append(weight.new_zeros(start - row, weight.shape[1]))
            pieces.append(chunk.to(weight.dtype))
            row = start + len(chunk)
        if row < weight.shape[0]:
            pieces.append(weight.new_zeros(weight.shape[0] - row, weight.shape[1]))
        out[prefix + path] = weight + (pieces[0] if len(pieces) == 1 else torch.cat(pieces))
    return out
