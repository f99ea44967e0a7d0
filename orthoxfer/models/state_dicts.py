"""Open_clip state dicts in and out: fine-tuned checkpoints as fine-tuning code writes them, edited models as open_clip reads them.

Read: ``.safetensors``, and ``.pt`` / ``.pth`` / ``.bin`` through
``torch.load(weights_only=True)``. Nothing is unpickled, so a file that holds a pickled
module (``torch.save(model)``, as task-arithmetic code saves its fine-tuned encoders)
is refused with the line of Python that re-saves it as a state dict, to be run only
where the file is trusted. The layouts read: a whole CLIP, its image tower alone
(``conv1.weight``, ...), either under the prefixes wrappers add (``module.`` from
DDP, ``_orig_mod.`` from ``torch.compile``, ``model.`` from encoder wrappers), or
inside the ``state_dict`` (or ``model``) entry of a training checkpoint. Task vectors
live in the image tower, so only its keys are taken and checked against the base: a
checkpoint of another architecture fails on its first mismatching key, with both
shapes. A transformers CLIP (a folder with ``config.json``, or ``hf-hub:owner/repo`` holding
one) is converted to open_clip names first (:mod:`orthoxfer.models.hf_clip`); a PEFT
adapter is no model at all, and :func:`resolve_finetuned` says so for the caller to read
it as a LoRA vector (:mod:`orthoxfer.vectors.peft_lora`).
"""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from orthoxfer.artifacts import save_artifact
from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models import hf_clip, hub
from orthoxfer.models.loading import LoadedModel, is_torchscript
from orthoxfer.vectors.sites import default_root
from orthoxfer.vectors.taskvector import MismatchError

KIND = "model"  # an edited model's weights, as open_clip loads them (the header only says where they came from)
WRAPPERS = ("module.", "_orig_mod.", "model.")
ENTRIES = ("state_dict", "model")


def checkpoint_file(value: str, cache_dir: Path | None = None) -> Path:
    """A local file, or ``hf-hub:owner/repo[/path/in/repo]`` from the Hugging Face cache (open_clip's weights by default)."""
    if value.startswith(hub.PREFIX):
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, inner = hub.parse(value)
        return hub.hub_file(repo, [inner] if inner else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME], cache_dir)
    path = Path(value).expanduser()
    if not path.is_file():
        raise UsageError(
            f"fine-tuned checkpoint {path} does not exist (give a .safetensors, .pt or .bin file, or hf-hub:owner/repo/file)"
        )
    return path


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if is_torchscript(path):
        raise OrthoxferError(
            f"{path} is a TorchScript archive, not a state dict; where you trust it, re-save its weights: "
            f"python -c \"import torch; torch.save(torch.jit.load('{path}').state_dict(), 'finetuned.pt')\""
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise OrthoxferError(
            f"{path} holds a pickled Python object{what}, not only tensors, and orthoxfer never unpickles; where you "
            f"trust the file, re-save its state dict: python -c \"import torch; m = torch.load('{path}', weights_only=False); "
            f"torch.save(m.state_dict() if hasattr(m, 'state_dict') else m['state_dict'], 'finetuned.pt')\""
        ) from None


def _tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside what a file holds: unwrapped from a training checkpoint's entry and from wrapper prefixes."""
    if isinstance(obj, dict):
        entry = next((obj[e] for e in ENTRIES if isinstance(obj.get(e), dict)), None)
        obj = entry if entry is not None else obj
    tensors = (
        {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if isinstance(obj, dict)
        else {}
    )
    if not tensors:
        raise OrthoxferError(f"{path} holds no state dict (no named tensors, nor a 'state_dict' entry with them)")
    while (prefix := next((w for w in WRAPPERS if all(k.startswith(w) for k in tensors)), None)) is not None:
        tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
    return tensors


OPEN_CLIP, TRANSFORMERS, PEFT = "open_clip", "transformers", "peft"


def resolve_finetuned(value: str, cache_dir: Path | None = None) -> tuple[str, Path | hf_clip.HFCheckpoint]:
    """What ``--finetuned`` names: ``("open_clip", file)``, ``("transformers", checkpoint)`` or ``("peft", folder)``.

    ``hf-hub:owner/repo`` (no file) is whichever the repository holds, open_clip weights
    first, then a transformers ``config.json``, then a PEFT ``adapter_config.json``.
    """
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    local = Path(value).expanduser()
    if local.is_dir():
        if (local / hf_clip.ADAPTER_CONFIG).is_file():
            return PEFT, local
        if hf_clip.is_transformers_dir(local):
            return TRANSFORMERS, hf_clip.local_checkpoint(local)
        raise UsageError(
            f"{local} is a folder without config.json or adapter_config.json: give a weights file, a transformers "
            "CLIP folder or a PEFT adapter folder"
        )
    if value.startswith(hub.PREFIX) and hub.parse(value)[1] is None:
        repo = hub.parse(value)[0]
        names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, hf_clip.CONFIG, hf_clip.ADAPTER_CONFIG]
        found = hub.hub_file(repo, names, cache_dir)
        if found.name == hf_clip.CONFIG:
            return TRANSFORMERS, hf_clip.hub_checkpoint(repo, found, cache_dir)
        if found.name == hf_clip.ADAPTER_CONFIG:  # its weights beside it, in the same snapshot folder
            return PEFT, hub.hub_file(repo, list(hf_clip.ADAPTER_WEIGHTS), cache_dir).parent
        return OPEN_CLIP, found
    return OPEN_CLIP, checkpoint_file(value, cache_dir)


def transformers_model(ckpt: hf_clip.HFCheckpoint, base: LoadedModel) -> nn.Module:
    """A copy of the base whose image tower carries a transformers checkpoint's weights, converted.

    A ``CLIPVisionModel`` has no projection: the base's stays (its delta is zero). A
    checkpoint trained with another activation than the base runs cannot have been
    fine-tuned from it, so that is refused before any difference is taken.
    """
    if ckpt.config.quick_gelu != base.quick_gelu:
        act = {True: "QuickGELU", False: "GELU"}
        raise MismatchError(
            f"{ckpt.where} was trained with {act[ckpt.config.quick_gelu]} (hidden_act {ckpt.config.vision['hidden_act']}) "
            f"and the base {base.spec} runs {act[base.quick_gelu]}: it was not fine-tuned from that base (OpenAI's "
            "weights run QuickGELU: ViT-B-32:openai)"
        )
    state = {k: v for k, v in ckpt.open_clip_state().items() if k.startswith("visual.")}
    if "visual.proj" not in state:
        state["visual.proj"] = base.model.state_dict()["visual.proj"]
    model = copy.deepcopy(base.model)
    model.load_state_dict(check_tower(state, base.model, ckpt.where), strict=False)
    return model


def finetuned_tower(path: Path, base: nn.Module) -> dict[str, torch.Tensor]:
    """The image tower of the checkpoint at ``path``, keyed as ``base``'s parameters and checked against them."""
    try:
        tensors = _tensors(_read(path), path)
    except OrthoxferError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise many types for truncated or foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OrthoxferError(f"could not read {path} as a state dict ({reason})") from None
    return check_tower(tensors, base, str(path))


def check_tower(tensors: dict[str, torch.Tensor], base: nn.Module, path: str) -> dict[str, torch.Tensor]:
    """The image-tower tensors among ``tensors``, keyed as ``base``'s; the first key or shape that differs is one line."""
    root = default_root(base)
    prefix = f"{root}." if root else ""
    state = base.state_dict()
    expected = {k: v for k, v in state.items() if k.startswith(prefix)}
    # the image tower saved on its own (conv1.weight, ...) names more of the tower once prefixed than of the model as it is
    if sum(prefix + k in expected for k in tensors) > sum(k in state for k in tensors):
        tensors = {prefix + k: v for k, v in tensors.items()}
    tower = {k: v for k, v in tensors.items() if k.startswith(prefix)}
    for key, value in tower.items():
        found = tuple(expected[key].shape) if key in expected else "none"
        if found != tuple(value.shape):
            raise MismatchError(
                f"{path} does not fit the base: key {key!r} has shape {tuple(value.shape)} in the checkpoint and {found} "
                f"in the base (a different architecture or size?)"
            )
    missing = next((k for k in expected if k not in tower), None)
    if missing is not None:
        raise MismatchError(
            f"{path} does not fit the base: key {missing!r} has shape none in the checkpoint and "
            f"{tuple(expected[missing].shape)} in the base (first keys found: {', '.join(list(tensors)[:3])})"
        )
    return tower


def finetuned_model(path: Path, base: nn.Module) -> nn.Module:
    """A copy of ``base`` whose image tower carries the checkpoint's weights (the rest stays the base's)."""
    tower = finetuned_tower(path, base)
    model = copy.deepcopy(base)
    model.load_state_dict(tower, strict=False)
    return model


def save_state_dict(model: nn.Module, path: Path | str, meta: dict[str, Any]) -> None:
    """``model``'s whole state dict as safetensors, written atomically; ``open_clip.create_model(ARCH, pretrained=path)`` loads it."""
    save_artifact(path, KIND, model.state_dict(), meta)
