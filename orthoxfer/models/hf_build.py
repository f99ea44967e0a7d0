"""A transformers CLIP checkpoint built as the open_clip model its config implies, its weights converted.

The loader (:mod:`orthoxfer.models.loading`) wraps the result as a ``LoadedModel``; this
module does the open_clip side: the architecture (:func:`~orthoxfer.models.hf_clip.open_clip_arch`),
the activation from ``hidden_act``, the weights under open_clip names. A vision-only
checkpoint has no text tower (and a ``CLIPVisionModel`` no projection): those parts stay
at the architecture's seeded random init, and the ``LoadedModel`` says it has no text
tower, so that zero-shot heads are refused rather than made from random weights; the
image tower, all that a source or a task vector needs, is exact.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
from torch import nn

from orthoxfer.errors import OrthoxferError
from orthoxfer.models import hf_clip


@dataclass
class Built:
    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]  # open_clip's eval transform: PIL image -> tensor
    tokenizer: object
    arch: str  # the open_clip architecture name


def build(ckpt: hf_clip.HFCheckpoint, spec: str) -> Built:
    name = hf_clip.open_clip_arch(ckpt.config)
    state = ckpt.open_clip_state()
    previous = logging.root.manager.disable
    try:
        logging.disable(logging.WARNING)  # open_clip's log lines; orthoxfer reports what matters itself
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            torch.manual_seed(0)  # the parts a vision-only checkpoint lacks are the same on every run
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=None,
                quick_gelu=ckpt.config.quick_gelu,
                **hf_clip.preprocessing(ckpt.weights[0].parent),
            )
            result = model.load_state_dict(state, strict=False)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # noqa: BLE001 - a shape mismatch names the tensor
        reason = str(exc).strip().splitlines()[-1] if str(exc) else type(exc).__name__
        raise OrthoxferError(f"could not build {spec} as open_clip {name}: {reason}") from None
    finally:
        logging.disable(previous)
    missing = [k for k in result.missing_keys if k.startswith("visual.") and k != "visual.proj"]
    if missing:
        raise OrthoxferError(f"{spec} lacks image-tower weights ({', '.join(missing[:3])}): a truncated checkpoint?")
    return Built(model, preprocess, tokenizer, name)
