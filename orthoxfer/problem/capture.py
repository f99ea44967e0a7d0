"""The inputs each site sees, captured on real images.

q, k and v read the attention module's query, key and value inputs. ``out`` reads
the concatenated heads *before* ``out_proj``, which ``nn.MultiheadAttention`` never
exposes (it calls ``out_proj`` functionally); it is recomputed here from the
captured inputs with the module's own weights. Plain linear sites (square, or the rectangular MLP weights) read their
input through a forward pre-hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.problem.tasks import image_features
from orthoxfer.vectors.sites import Site


def attention_heads(mha: nn.MultiheadAttention, query, key, value, attn_mask=None) -> torch.Tensor:
    """The concatenated head outputs that ``out_proj`` receives, batch first: (B, L, d)."""
    if not mha.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    w, b = mha.in_proj_weight, mha.in_proj_bias
    bias = (None, None, None) if b is None else b.chunk(3)
    q, k, v = (F.linear(x, wi, bi) for x, wi, bi in zip((query, key, value), w.chunk(3), bias))
    return attend(mha, q, k, v, attn_mask)


def attend(
    mha: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None
) -> torch.Tensor:
    """Attention of already projected, batch-first q, k, v (B, L, d) with ``mha``'s heads, heads concatenated."""
    d, h = mha.embed_dim, mha.num_heads
    bsz = q.shape[0]
    q, k, v = (t.reshape(bsz, -1, h, d // h).transpose(1, 2) for t in (q, k, v))
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask  # nn.MultiheadAttention: True = masked; SDPA: True = attend
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return out.transpose(1, 2).reshape(bsz, -1, d)


@contextmanager
def capture_inputs(model: nn.Module, sites: list[Site]) -> Iterator[dict[str, torch.Tensor]]:
    """While active, every forward of ``model`` fills ``{site: (tokens, d) inputs}``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = ExitStack()  # a hook handle is a context manager: closing the stack removes every hook
    by_module: dict[str, list[Site]] = {}
    for site in sites:
        owner = site.name.rsplit(".", 1)[0]
        by_module.setdefault(owner, []).append(site)
    for owner, members in by_module.items():
        module = model.get_submodule(owner)
        if isinstance(module, nn.MultiheadAttention):

            def hook(mod, args, kwargs, members=members):
                names = ("query", "key", "value")
                q, k, v = (args[i] if len(args) > i else kwargs[n] for i, n in enumerate(names))
                inputs = {"q": q, "k": k, "v": v}
                for site in members:
                    if site.part == "out":
                        x = attention_heads(mod, q, k, v, kwargs.get("attn_mask"))
                    else:
                        x = inputs[site.part] if mod.batch_first else inputs[site.part].transpose(0, 1)
                    seen[site.name] = x.detach().reshape(-1, site.dim)

            hooks.enter_context(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:

            def linear_hook(mod, args, members=members):
                seen[members[0].name] = args[0].detach().reshape(-1, members[0].dim)

            hooks.enter_context(module.register_forward_pre_hook(linear_hook))
    with hooks:
        yield seen


@torch.no_grad()
def cross_covariance(
    target: nn.Module, source: nn.Module, sites: list[Site], batches: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``X_T^T X_S`` per site over all images: the only statistic orthogonal Procrustes needs."""
    totals: dict[str, torch.Tensor] = {}
    with capture_inputs(target, sites) as xt, capture_inputs(source, sites) as xs:
        for images in batches:
            image_features(target, images)
            image_features(source, images)
            for s in sites:
                m = xt[s.name].double().T @ xs[s.name].double()
                totals[s.name] = totals[s.name] + m if s.name in totals else m
    return totals
