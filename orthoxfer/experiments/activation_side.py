"""The activation-side formulation of the paper's released code, kept only as a comparison point for the step cost.

The reference applies each site's transform to activations on every forward: for a
site input x (rows are tokens) the update adds ``x (U^T dW U)^T = ((x U^T) dW^T) U``,
three activation-sized matmuls per site (``F.linear`` with U, dW, then U^T; for LoRA
``dW^T = A^T B^T``), where orthoxfer materialises ``U^T dW U`` once per step. This
module runs exactly that inside the target's attention blocks. ``nn.MultiheadAttention``
never exposes the input of ``out_proj``, so q, k, v and the attention itself are
computed by hand (:func:`orthoxfer.problem.capture.attend`, the same maths as the module).

:class:`ActivationSideStep` is :class:`~orthoxfer.fit.align_step.AlignStep` with only its
``logits`` replaced, so strategy, regulariser, optimiser and clipping are the real ones
and the benchmark compares the two formulations and nothing else. Only
:mod:`orthoxfer.experiments.step_cost` uses it; no alignment runs this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.fit.align_step import AlignStep
from orthoxfer.problem.capture import attend

Contribution = Callable[[int, torch.Tensor], torch.Tensor]


class ActivationSideAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention as the image tower uses it) whose site outputs gain the update."""

    def __init__(self, mha: nn.MultiheadAttention, parts: dict[str, int], contribution: Contribution) -> None:
        super().__init__()
        self.mha, self.parts, self.contribution = mha, parts, contribution

    def project(self, part: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = F.linear(x, weight, bias)
        return y + self.contribution(self.parts[part], x) if part in self.parts else y

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, **_):
        if key_padding_mask is not None:
            raise UsageError("the activation-side comparison supports no key_padding_mask (the image tower has none)")
        mha = self.mha
        if not mha.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        bias = (None, None, None) if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
        inputs = zip("qkv", (query, key, value), mha.in_proj_weight.chunk(3), bias)
        q, k, v = (self.project(part, x, w, b) for part, x, w, b in inputs)
        out = self.project("out", attend(mha, q, k, v, attn_mask), mha.out_proj.weight, mha.out_proj.bias)
        return (out if mha.batch_first else out.transpose(0, 1)), None


@contextmanager
def swapped(model: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[None]:
    """Put ``replacements`` (by module path) into ``model`` for the duration of a forward."""
    originals = {}
    for path, module in replacements.items():
        parent, name = path.rsplit(".", 1)
        originals[path] = getattr(model.get_submodule(parent), name)
        setattr(model.get_submodule(parent), name, module)
    try:
        yield
    finally:
        for path, module in originals.items():
            parent, name = path.rsplit(".", 1)
            setattr(model.get_submodule(parent), name, module)


class ActivationSideStep(AlignStep):
    """An alignment step whose forward applies U on activations, as the reference code does."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        parts: dict[str, dict[str, int]] = {}
        for i, site in enumerate(self.sites):
            if site.part not in ("q", "k", "v", "out"):
                raise UsageError(f"the activation-side comparison covers attention sites only, not {site.name}")
            parts.setdefault(site.block, {})[site.part] = i
        self.blocks = {
            path: ActivationSideAttention(self._attention(path), p, self.contribution) for path, p in parts.items()
        }
        self.updates: list[tuple[torch.Tensor, ...]] = []  # per site: dW, or LoRA's (A, B) with dW^T = A^T B^T
        for vec in self.vectors:
            if vec.dw is not None:
                self.updates += [(dw,) for dw in vec.dw.unbind(0)]
            else:
                a, b = vec.factors()
                self.updates += list(zip(a.unbind(0), b.unbind(0)))
        self.current: list[torch.Tensor] = []

    def _attention(self, path: str) -> nn.MultiheadAttention:
        mha = self.model.get_submodule(path)
        if not isinstance(mha, nn.MultiheadAttention):
            raise UsageError(
                f"the activation-side comparison needs torch's MultiheadAttention at {path}, not {type(mha).__name__}"
            )
        return mha

    def contribution(self, site: int, x: torch.Tensor) -> torch.Tensor:
        """``((x U^T) dW^T) U``: the site's update applied to its input, three activation-sized matmuls."""
        u = self.current[site]
        h = F.linear(x, u)
        for factor in self.updates[site]:
            h = F.linear(h, factor)
        return F.linear(h, u.mT)

    def logits(self, x: torch.Tensor, head: nn.Module, transforms) -> torch.Tensor:
        stacks = transforms.stacks()
        self.current = [u for g, s in zip(self.groups, stacks) for u in (s[g.index] if g.tied else s).unbind(0)]
        with swapped(self.model, self.blocks), self.autocast:
            return head(self.encoder(x))
