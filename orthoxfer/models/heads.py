"""Zero-shot classification heads from a CLIP text tower, cached on disk.

A head turns a CLIP into a classifier for one dataset: one unit vector per class (the
normalised mean over prompt templates of the normalised text embeddings) and CLIP's
logit scale. It must come from the text tower of the model being evaluated (a target's
heads from the target), and it stays frozen while the image tower is aligned or
fine-tuned, so it is computed once and stored as a safetensors file named by a digest
of everything it depends on: the model's identity, the class names and the templates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.artifacts import ArtifactError, load_artifact, save_artifact
from orthoxfer.cache import cache_root
from orthoxfer.errors import UsageError
from orthoxfer.models.loading import LoadedModel

KIND = "zero_shot_head"


def heads_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """Where heads go when no heads folder is given: ``<cache_dir>/heads`` when a run names its cache
    (``--cache-dir``), so that everything it makes stays in that folder; else ``heads`` under
    :func:`~orthoxfer.cache.cache_root`."""
    return cache_root(cache_dir) / "heads"


class ZeroShotHead(nn.Module):
    """Frozen ``logits = scale * normalize(features) @ W.T`` with unit-norm class rows ``W`` (C, D)."""

    weight: torch.Tensor
    logit_scale: torch.Tensor

    def __init__(self, weight: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        # buffers, not parameters: they follow .to(device) but no optimiser ever sees them
        self.register_buffer("weight", weight.detach().float().clone())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        return self.logit_scale.to(features.dtype) * features @ self.weight.to(features.dtype).T


class TextTower(Protocol):
    """What a head is computed from: a CLIP's text encoder and logit scale (open_clip ships no types)."""

    logit_scale: torch.Tensor

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...


def text_tower(model: nn.Module) -> TextTower:
    """``model`` as a CLIP with a text tower, or a one-line error for a module without one."""
    if not callable(getattr(model, "encode_text", None)) or not isinstance(
        getattr(model, "logit_scale", None), torch.Tensor
    ):
        raise UsageError(
            f"{type(model).__name__} has no text tower (encode_text, logit_scale): a zero-shot head needs a CLIP"
        )
    return cast(TextTower, model)


@torch.no_grad()  # not inference_mode: inference tensors could not be saved for a later backward through the head
def text_head(
    model: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> ZeroShotHead:
    """Compute a head with ``model.encode_text`` (on the model's device, in float32)."""
    if not classnames or not templates:
        raise ValueError("a zero-shot head needs at least one class name and one template")
    device = next(model.parameters()).device
    clip = text_tower(model)
    prompts = [t.format(c) for c in classnames for t in templates]
    embeddings = []
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size]).to(device)
        embeddings.append(F.normalize(clip.encode_text(tokens).float(), dim=-1))
    per_class = torch.cat(embeddings).view(len(classnames), len(templates), -1).mean(dim=1)
    return ZeroShotHead(F.normalize(per_class, dim=-1).cpu(), clip.logit_scale.exp().item())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "head"


def zero_shot_head(
    model: LoadedModel | nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str],
    cache_dir: Path | str | None = None,
    key: str | None = None,
    name: str = "head",
) -> ZeroShotHead:
    """The zero-shot head of ``model`` for these classes, read from ``cache_dir`` when it was computed before.

    ``model`` is a :class:`LoadedModel` (its tokenizer and identity are used) or any
    CLIP-like module with ``encode_text`` and ``logit_scale``, which then needs
    ``tokenizer`` and, for caching, a ``key`` that names its weights. ``name`` (the
    dataset) only makes the cache file readable; the digest decides a hit.
    """
    if isinstance(model, LoadedModel):
        if not model.text_tower:
            raise UsageError(
                f"{model.spec} is a transformers vision model without a text tower, so it has no zero-shot heads: "
                "evaluate its base (e.g. ViT-B-32:openai) plus a task vector made from it with `orthoxfer vector "
                "from-checkpoints`, or give a CLIPModel"
            )
        tokenizer = tokenizer or model.tokenizer
        key = key or model.identity
        model = model.model
    if tokenizer is None:
        raise ValueError("zero_shot_head needs a tokenizer for a bare model")
    if cache_dir is None:
        return text_head(model, tokenizer, classnames, templates)
    if key is None:
        raise ValueError("caching the head of a bare model needs key= naming its weights (e.g. 'ViT-B-32:openai')")
    ident = {"model": key, "classnames": list(classnames), "templates": list(templates)}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir).expanduser() / f"{_slug(name)}-{digest[:20]}.safetensors"
    try:
        tensors, meta = load_artifact(path, KIND)
        if meta.get("digest") == digest and tensors["weight"].shape[0] == len(classnames):
            return ZeroShotHead(tensors["weight"], meta["logit_scale"])
    except (ArtifactError, KeyError):
        pass  # absent or unreadable: compute it again and overwrite
    head = text_head(model, tokenizer, classnames, templates)
    meta = {
        "digest": digest,
        "model": key,
        "name": name,
        "logit_scale": head.logit_scale.item(),
        "classes": len(classnames),
        "templates": list(templates),
    }
    save_artifact(path, KIND, {"weight": head.weight}, meta)
    return head
