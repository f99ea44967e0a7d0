"""transformers CLIP checkpoints in open_clip: the architecture their config implies, their files, their weights.

The public fine-tuned CLIPs (FusionBench's ``tanganke/clip-vit-base-patch32_<task>``)
are transformers ``CLIPVisionModel``s; orthoxfer works on open_clip models, so a
transformers checkpoint is converted on load and never run as transformers. Its
``config.json`` decides the open_clip architecture: the first registered open_clip
config of the same shape (``ViT-B-32-quickgelu`` for OpenAI's B/32, so the printed
name is one open_clip users know), else a config registered from it. The activation
comes from ``hidden_act`` (``quick_gelu`` for OpenAI's weights), never from an
architecture default. Reading needs only json, safetensors and torch; transformers
itself is imported only to write a model out (:mod:`orthoxfer.models.hf_export`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import load_file

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models import hf_names, hub
from orthoxfer.models.archs import register_arch

CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PREPROCESSOR = "preprocessor_config.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
HF_ARCH_PREFIX = "hf-clip-"  # open_clip architectures registered from a config that matches no known one
VISION_KINDS = ("CLIPVisionModel", "CLIPVisionModelWithProjection")
# transformers writes only what differs from these (CLIPVisionConfig / CLIPTextConfig defaults: OpenAI's ViT-B/32)
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
    "projection_dim": 512,
}
TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
ACTIVATIONS = {"quick_gelu": True, "gelu": False}  # hidden_act -> open_clip's quick_gelu
_PLAIN = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}
_PLAIN_VISION = {"image_size", "patch_size", "width", "layers", "head_width", "mlp_ratio", "patch_dropout"}
_PLAIN_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}


@dataclass(frozen=True)
class HFConfig:
    """What a transformers CLIP ``config.json`` says about the network, with transformers' defaults filled in."""

    kind: str  # CLIPModel | CLIPVisionModel | CLIPVisionModelWithProjection
    vision: dict[str, Any]
    text: dict[str, Any] | None  # a CLIPModel's text tower; None for the vision classes
    projection_dim: int
    where: str = field(default="", compare=False)

    @property
    def quick_gelu(self) -> bool:
        return ACTIVATIONS[self.vision["hidden_act"]]

    @property
    def has_projection(self) -> bool:
        return self.kind != "CLIPVisionModel"

    def open_clip_vision(self) -> dict[str, Any]:
        v = self.vision
        return {
            "image_size": v["image_size"],
            "patch_size": v["patch_size"],
            "width": v["hidden_size"],
            "layers": v["num_hidden_layers"],
            "head_width": v["hidden_size"] // v["num_attention_heads"],
            "mlp_ratio": v["intermediate_size"] / v["hidden_size"],
        }

    def open_clip_text(self) -> dict[str, Any] | None:
        if self.text is None:
            return None
        t = self.text
        return {
            "context_length": t["max_position_embeddings"],
            "vocab_size": t["vocab_size"],
            "width": t["hidden_size"],
            "heads": t["num_attention_heads"],
            "layers": t["num_hidden_layers"],
            "mlp_ratio": t["intermediate_size"] / t["hidden_size"],
        }


def is_transformers_dir(path: Path) -> bool:
    """A folder that transformers' ``from_pretrained`` reads (``config.json``), as opposed to a weights file."""
    return path.is_dir() and (path / CONFIG).is_file()


def parse_config(config: dict[str, Any], where: str) -> HFConfig:
    """A CLIP ``config.json`` checked and completed; a text-only or non-CLIP model is one line."""
    model_type = config.get("model_type")
    kind = (config.get("architectures") or [None])[0]
    if model_type == "clip":
        vision, text = config.get("vision_config") or {}, config.get("text_config") or {}
        projection = config.get("projection_dim", VISION_DEFAULTS["projection_dim"])
        kind = "CLIPModel"
    elif model_type == "clip_vision_model":
        vision, text = config, None
        projection = config.get("projection_dim", VISION_DEFAULTS["projection_dim"])
        kind = kind if kind in VISION_KINDS else "CLIPVisionModel"
    elif model_type == "clip_text_model":
        raise UsageError(
            f"{where} is a transformers CLIP text model ({kind or 'CLIPTextModel'}): it has no image tower; give a "
            "CLIPVisionModel, CLIPVisionModelWithProjection or CLIPModel"
        )
    else:
        what = f"{model_type} model ({kind})" if kind else f"{model_type or 'unknown'} model"
        raise UsageError(
            f"{where} is a transformers {what}, not CLIP; orthoxfer reads transformers CLIPModel, CLIPVisionModel "
            "and CLIPVisionModelWithProjection checkpoints (or open_clip ones as ARCH:/path)"
        )
    vision = {**VISION_DEFAULTS, **{k: v for k, v in vision.items() if k in VISION_DEFAULTS}}
    if vision["hidden_act"] not in ACTIVATIONS:
        raise UsageError(
            f"{where}: hidden_act {vision['hidden_act']!r} has no open_clip counterpart (only quick_gelu and gelu)"
        )
    if vision["num_channels"] != 3 or vision["layer_norm_eps"] != 1e-5:
        raise UsageError(
            f"{where}: {vision['num_channels']} channels and layer_norm_eps {vision['layer_norm_eps']}: open_clip's "
            "ViT has 3 channels and layer_norm_eps 1e-5"
        )
    if text is not None:
        text = {**TEXT_DEFAULTS, **{k: v for k, v in text.items() if k in TEXT_DEFAULTS}}
    return HFConfig(kind, vision, text, int(projection), where)


def read_config(path: Path, where: str) -> HFConfig:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OrthoxferError(f"could not read {path} as JSON ({exc})") from None
    return parse_config(config, where)


def _shape(config: dict[str, Any]) -> tuple | None:
    """A plain ViT CLIP config reduced to what fixes its weights and its function; None for anything else (timm, ...)."""
    v, t = config.get("vision_cfg") or {}, config.get("text_cfg") or {}
    if set(config) - _PLAIN or set(v) - _PLAIN_VISION or set(t) - _PLAIN_TEXT:
        return None
    if not all(isinstance(v.get(k), int) for k in ("image_size", "patch_size", "width", "layers")):
        return None
    vision = (
        v["image_size"],
        v["patch_size"],
        v["width"],
        v["layers"],
        v.get("head_width", 64),
        float(v.get("mlp_ratio", 4.0)),
    )
    text = (
        t.get("context_length", 77),
        t.get("vocab_size", 49408),
        t.get("width", 512),
        t.get("heads", 8),
        t.get("layers", 12),
        float(t.get("mlp_ratio", 4.0)),
    )
    return config.get("embed_dim"), vision, text


def open_clip_arch(cfg: HFConfig) -> str:
    """The open_clip architecture of these weights: a known one of the same shape (same activation first), else a new one.

    A vision-only checkpoint fixes no text tower, so any text tower of a known config
    matches; without a known config it gets the default CLIP text tower (random weights).
    """
    text = cfg.open_clip_text()
    wanted = {"embed_dim": cfg.projection_dim, "vision_cfg": cfg.open_clip_vision()}
    target = _shape({**wanted, "text_cfg": text or {}})
    matches = []
    for name in open_clip.list_models():
        known = open_clip.get_model_config(name) or {}
        shape = _shape(known)
        if shape is None or target is None or shape[:2] != target[:2] or (text is not None and shape[2] != target[2]):
            continue
        matches.append((bool(known.get("quick_gelu", False)) != cfg.quick_gelu, len(name), name))
    if matches:
        return min(matches)[2]
    config = {**wanted, "text_cfg": text or _default_text(), "quick_gelu": cfg.quick_gelu}
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{HF_ARCH_PREFIX}{digest}"
    register_arch(name, config)
    return name


def _default_text() -> dict[str, Any]:
    return HFConfig("CLIPModel", VISION_DEFAULTS, TEXT_DEFAULTS, 512).open_clip_text() or {}


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """safetensors, or a ``.bin`` through ``torch.load(weights_only=True)``: nothing is unpickled."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise many types for truncated or foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OrthoxferError(f"could not read {path} as transformers weights ({reason})") from None
    if not isinstance(state, dict):
        raise OrthoxferError(f"{path} holds no state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


@dataclass
class HFCheckpoint:
    """A transformers CLIP checkpoint found: its config, its weights files and where the user named it."""

    config: HFConfig
    weights: list[Path]  # one file, or the shards an index names
    where: str

    def open_clip_state(self) -> dict[str, torch.Tensor]:
        """All its weights under open_clip names (``visual.*``, and the text tower's for a CLIPModel)."""
        tensors: dict[str, torch.Tensor] = {}
        for path in self.weights:
            tensors.update(read_tensors(path))
        return hf_names.to_open_clip(tensors, self.where)


def _local_weights(folder: Path) -> list[Path]:
    for name in WEIGHTS:
        if (folder / name).is_file():
            return [folder / name]
    for name in INDEXES:
        if (folder / name).is_file():
            shards = sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    if (folder / ADAPTER_CONFIG).is_file():
        raise UsageError(
            f"{folder} is a PEFT adapter (adapter_config.json), not a model: make a task vector of it with "
            "`orthoxfer vector from-checkpoints --base BASE --finetuned " + str(folder) + "`"
        )
    raise UsageError(f"{folder} has {CONFIG} but no {' or '.join(WEIGHTS)} (a transformers CLIP checkpoint has both)")


def local_checkpoint(folder: Path) -> HFCheckpoint:
    return HFCheckpoint(read_config(folder / CONFIG, str(folder)), _local_weights(folder), str(folder))


def hub_checkpoint(repo: str, config: Path, cache_dir: Path | None) -> HFCheckpoint:
    """A repository's transformers checkpoint (its ``config.json`` already resolved): weights from the cache or the hub."""
    where = f"{hub.PREFIX}{repo}"
    cfg = read_config(config, where)
    return HFCheckpoint(cfg, [hub.hub_file(repo, list(WEIGHTS), cache_dir)], where)


def preprocessing(folder: Path) -> dict[str, Any]:
    """``create_model_and_transforms`` arguments from a ``preprocessor_config.json`` beside the weights, if any."""
    path = folder / PREPROCESSOR
    if not path.is_file():
        return {}
    try:
        pp = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    keys = {"image_mean": "image_mean", "image_std": "image_std"}
    return {kw: tuple(pp[key]) for key, kw in keys.items() if isinstance(pp.get(key), list) and len(pp[key]) == 3}
