"""PEFT LoRA adapters on a CLIP image tower, read as LoRA task vectors with their factors kept.

PEFT saves ``lora_A`` (r x in) and ``lora_B`` (out x r) per targeted ``nn.Linear``; the
update is ``(lora_alpha / r) * B @ A`` (``lora_alpha / sqrt(r)`` with rsLoRA). Those are
exactly orthoxfer's LoRA factors, so nothing is multiplied out: a rotation costs
``(U^T B)(A U)``. The targeted modules map to open_clip sites: on a transformers CLIP,
``q_proj``/``k_proj``/``v_proj`` are the rows of ``in_proj`` (sites ``attn.q/k/v``),
``out_proj`` is ``attn.out`` and ``mlp.fc1``/``fc2`` the rectangular
``mlp.c_fc``/``c_proj``; on an open_clip CLIP, ``out_proj``, ``c_fc`` and ``c_proj``
(PEFT cannot target the packed ``in_proj``). Text-tower modules are left out and
counted: task vectors live in the image tower. Anything PEFT can add that is not a LoRA
factor on a linear layer (DoRA magnitudes, trained biases, whole modules) is refused,
since reading the factors alone would silently drop part of the fine-tune.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models.hf_clip import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_tensors
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import TaskVector

WEIGHTS = ADAPTER_WEIGHTS
_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[\w-]+)?\.weight$")
_HF = re.compile(r"(?:^|\.)encoder\.layers\.(?P<i>\d+)\.(?:self_attn\.(?P<attn>[qkv]|out)_proj|mlp\.(?P<mlp>fc1|fc2))$")
_OPEN_CLIP = re.compile(
    r"(?:^|\.)visual\.transformer\.resblocks\.(?P<i>\d+)\.(?:attn\.(?P<attn>out)_proj|mlp\.(?P<mlp>c_fc|c_proj))$"
)
_MLP = {"fc1": "c_fc", "fc2": "c_proj", "c_fc": "c_fc", "c_proj": "c_proj"}


def _text_tower(module: str) -> bool:
    """transformers' ``text_model.*``, or open_clip's top-level ``transformer.resblocks`` (the image tower's is ``visual.``)."""
    return "text_model." in module or ("transformer.resblocks." in module and "visual." not in module)


def site_of(module: str) -> str | None:
    """The open_clip site a PEFT-targeted module is, or None for a text-tower module."""
    if _text_tower(module):
        return None
    for pattern in (_HF, _OPEN_CLIP):
        if (m := pattern.search(module)) is not None:
            block = f"visual.transformer.resblocks.{m.group('i')}"
            if m.group("attn"):
                return f"{block}.attn.{m.group('attn')}"
            return f"{block}.mlp.{_MLP[m.group('mlp')]}.weight"
    raise UsageError(
        f"adapter module {module!r} is no CLIP image-tower linear layer orthoxfer knows (q/k/v/out_proj, mlp.fc1/fc2; "
        "open_clip: out_proj, c_fc, c_proj)"
    )


def _pattern_value(module: str, patterns: dict[str, Any], default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches a module name's tail."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OrthoxferError(f"could not read {path} ({exc})") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise UsageError(f"{folder} is a PEFT {config.get('peft_type')} adapter; orthoxfer reads LoRA adapters only")
    refused = [
        ("use_dora", "DoRA magnitudes"),
        ("modules_to_save", "whole saved modules"),
        ("fan_in_fan_out", "fan_in_fan_out (Conv1D) layers"),
    ]
    for key, what in refused:
        if config.get(key):
            raise UsageError(f"{folder}: the adapter has {what} ({key}); orthoxfer reads plain LoRA factors only")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise UsageError(
            f"{folder}: the adapter trains biases (bias {config.get('bias')!r}); orthoxfer reads LoRA factors only"
        )
    return config


def _weights(folder: Path) -> Path:
    for name in WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise UsageError(f"{folder} has {ADAPTER_CONFIG} but no {' or '.join(WEIGHTS)}")


def read_adapter(folder: Path | str, base: nn.Module, meta: dict[str, Any] | None = None) -> TaskVector:
    """The adapter in ``folder`` as a LoRA task vector on ``base``'s sites (checked against their shapes)."""
    folder = Path(folder)
    config = _config(folder)
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in read_tensors(_weights(folder)).items():
        m = _FACTOR.match(key.removeprefix("base_model.model."))
        if m is None:
            raise UsageError(f"{folder}: {key!r} is not a LoRA factor (A or B of a linear layer)")
        factors.setdefault(m.group("module"), {})[m.group("which")] = tensor
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    scales: dict[str, float] = {}
    left_out = 0
    for module, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise OrthoxferError(f"{folder}: module {module} has lora_{next(iter(pair))} but not its partner")
        site = site_of(module)
        if site is None:
            left_out += 1
            continue
        a, b = pair["A"], pair["B"]
        r = a.shape[0]
        alpha = float(_pattern_value(module, config.get("alpha_pattern") or {}, config.get("lora_alpha", r)))
        scales[site] = alpha / (r**0.5 if config.get("use_rslora") else r)
        lora[site] = (a, b)
    if not lora:
        raise UsageError(f"{folder}: the adapter targets no image-tower layer ({left_out} text-tower modules)")
    order = [s.name for s in find_sites(base, "all,mlp") if s.name in lora]
    missing = next((s for s in lora if s not in order), None)
    if missing is not None:
        raise UsageError(f"{folder}: site {missing!r} of the adapter does not exist in the base model")
    uniform = len(set(scales.values())) == 1
    if uniform:
        pairs = {s: lora[s] for s in order}
        scale = next(iter(scales.values()))
    else:  # rank or alpha patterns: each site's own scale goes into its B, the factors stay factored
        pairs = {s: (lora[s][0], scales[s] * lora[s][1]) for s in order}
        scale = 1.0
    rank = max(a.shape[0] for a, _ in pairs.values())
    info: dict[str, Any] = {
        "kind": "lora",
        "rank": rank,
        "dtype": str(next(iter(pairs.values()))[0].dtype).removeprefix("torch."),
        "tasks": [],
        "adapter": str(folder),
        "text_modules_left_out": left_out,
    }
    info.update(meta or {})
    vector = TaskVector(lora=pairs, scale=scale, meta=info)
    vector.check_fits(base)
    return vector
