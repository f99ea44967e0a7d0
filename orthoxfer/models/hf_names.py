"""transformers CLIP weights <-> open_clip CLIP weights: one name table, read both ways.

transformers keeps q, k and v as three ``nn.Linear`` per layer; open_clip packs them
into one ``nn.MultiheadAttention.in_proj_weight`` (rows 0:d, d:2d, 2d:3d), and stores
its projections as ``x @ proj`` (in x out) where transformers has ``Linear`` weights
(out x in). Everything else is a rename. The table is written once, as
``(transformers name, open_clip name, how)`` triples, so the way in and the way out
cannot drift apart. No transformers import: this is names and tensors only.
"""

from __future__ import annotations

import re

import torch

from orthoxfer.errors import OrthoxferError

COPY, TRANSPOSE = "copy", "transpose"
ROWS = ("q", "k", "v")  # how = "q" | "k" | "v": that third of the rows of a packed in_proj
VISION, TEXT = "vision_model.", "text_model."
IGNORED = re.compile(r"(^|\.)position_ids$")  # a buffer older transformers saved; not a weight
_LAYER = re.compile(r"encoder\.layers\.(\d+)\.")


def _layer_pairs(layer: int) -> list[tuple[str, str, str]]:
    """One residual block: the same names in the image and the text tower."""
    h, o = f"encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
    pairs = []
    for p in ("weight", "bias"):
        pairs += [
            (f"{h}layer_norm1.{p}", f"{o}ln_1.{p}", COPY),
            (f"{h}layer_norm2.{p}", f"{o}ln_2.{p}", COPY),
            *[(f"{h}self_attn.{part}_proj.{p}", f"{o}attn.in_proj_{p}", part) for part in ROWS],
            (f"{h}self_attn.out_proj.{p}", f"{o}attn.out_proj.{p}", COPY),
            (f"{h}mlp.fc1.{p}", f"{o}mlp.c_fc.{p}", COPY),
            (f"{h}mlp.fc2.{p}", f"{o}mlp.c_proj.{p}", COPY),
        ]
    return pairs


def vision_pairs(layers: int) -> list[tuple[str, str, str]]:
    """The image tower: transformers' ``vision_model.*`` + ``visual_projection`` -> open_clip's ``visual.*``."""
    pairs = [
        ("embeddings.patch_embedding.weight", "conv1.weight", COPY),
        ("embeddings.class_embedding", "class_embedding", COPY),
        ("embeddings.position_embedding.weight", "positional_embedding", COPY),
        ("pre_layrnorm.weight", "ln_pre.weight", COPY),
        ("pre_layrnorm.bias", "ln_pre.bias", COPY),
        ("post_layernorm.weight", "ln_post.weight", COPY),
        ("post_layernorm.bias", "ln_post.bias", COPY),
    ]
    for i in range(layers):
        pairs += _layer_pairs(i)
    out = [(VISION + h, "visual." + o, how) for h, o, how in pairs]
    return [*out, ("visual_projection.weight", "visual.proj", TRANSPOSE)]


def text_pairs(layers: int) -> list[tuple[str, str, str]]:
    """The text tower (a ``CLIPModel``'s): open_clip keeps it at the top level of the CLIP."""
    pairs = [
        ("embeddings.token_embedding.weight", "token_embedding.weight", COPY),
        ("embeddings.position_embedding.weight", "positional_embedding", COPY),
        ("final_layer_norm.weight", "ln_final.weight", COPY),
        ("final_layer_norm.bias", "ln_final.bias", COPY),
    ]
    for i in range(layers):
        pairs += _layer_pairs(i)
    out = [(TEXT + h, o, how) for h, o, how in pairs]
    return [*out, ("text_projection.weight", "text_projection", TRANSPOSE), ("logit_scale", "logit_scale", COPY)]


def normalise(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as a ``CLIPModel`` names them: transformers 5 saves a ``CLIPVisionModel``'s tower without ``vision_model.``."""
    tensors = {k: v for k, v in tensors.items() if not IGNORED.search(k)}
    for wrapper in ("module.", "model."):  # DDP or an encoder wrapper around the whole model
        if tensors and all(k.startswith(wrapper) for k in tensors):
            tensors = {k.removeprefix(wrapper): v for k, v in tensors.items()}
    bare = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
    return {VISION + k if k.startswith(bare) else k: v for k, v in tensors.items()}


def layer_count(tensors: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in tensors if k.startswith(prefix) and (m := _LAYER.search(k))}
    return max(found) + 1 if found else 0


def to_open_clip(tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """A transformers CLIP state dict (either tower, or both) as open_clip keys; an unknown key is one line."""
    tensors = normalise(tensors)
    pairs = vision_pairs(layer_count(tensors, VISION)) + text_pairs(layer_count(tensors, TEXT))
    known = {h for h, _, _ in pairs}
    stray = next((k for k in tensors if k not in known), None)
    if stray is not None:
        raise OrthoxferError(
            f"{where}: {stray!r} is not a weight of a transformers CLIP (CLIPModel, CLIPVisionModel, "
            f"CLIPVisionModelWithProjection); is it another architecture, or a PEFT adapter?"
        )
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[str, torch.Tensor]] = {}
    for h, o, how in pairs:
        if h not in tensors:
            continue
        t = tensors[h]
        if how in ROWS:
            packed.setdefault(o, {})[how] = t
        else:
            out[o] = t.T.contiguous() if how == TRANSPOSE else t
    for o, parts in packed.items():
        if set(parts) != set(ROWS):
            missing = next(p for p in ROWS if p not in parts)
            raise OrthoxferError(f"{where}: {o} lacks its {missing}_proj (a truncated checkpoint?)")
        out[o] = torch.cat([parts[p] for p in ROWS])
    return out


def from_open_clip(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """An open_clip CLIP's image tower as ``CLIPVisionModelWithProjection`` keys (``vision_model.*``, ``visual_projection``)."""
    out = {}
    for h, o, how in vision_pairs(layers):
        t = state[o]
        if how in ROWS:
            t = t.chunk(3)[ROWS.index(how)]
        elif how == TRANSPOSE:
            t = t.T
        out[h] = t.contiguous()
    return out
