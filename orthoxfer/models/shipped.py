"""Mini models shipped inside the package, so that every machine starts from the same weights.

Pre-training on a CPU is not bitwise portable: the same seed and config gave model A a
final loss of 2.784 under this machine's AVX-512 kernels and 2.802 under the AVX2 path,
and the demo's table moved by about a point between an Intel and an AMD machine. The
shipped files remove that first, largest divergence: ``orthoxfer mini pretrain`` writes
them, and :func:`orthoxfer.models.pretrain.pretrained_model` loads them wherever their
recipe hash matches the config asked for.

Only the image towers are shipped (about 3 MB each): the suite's heads are prototypes of
image features and its vectors live in the image tower, so the text tower served
pre-training only; a shipped model's text tower is its seeded, untrained init. The hash
covers what decides the weights (the config, the corpora's data version, the training
loop's version) but not the library versions, since the point is the same weights
under any torch.

Each width has its own files: the first shipped width's (:data:`FIRST_WIDTH`) keep the
names they were shipped under, ``model_<which>.safetensors``; another width's carry it,
``model_<which>_w<width>.safetensors``, so that models of several widths can ship side by
side and writing one never replaces another.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from orthoxfer.artifacts import ArtifactError, load_artifact, save_artifact

SHIPPED = Path(__file__).parent / "mini_weights"  # package data (pyproject's package-data)
KIND = "mini_shipped_model"
PREFIX = "visual."
FIRST_WIDTH = 128  # the width shipped first: its files' names carry no width


def shipped_file(which: str, width: int, folder: Path | None = None) -> Path:
    suffix = "" if width == FIRST_WIDTH else f"_w{width}"
    return (folder or SHIPPED) / f"model_{which}{suffix}.safetensors"


def read_shipped(
    which: str, width: int, recipe_hash: str, folder: Path | None = None
) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """Model ``which``'s shipped image tower (keys under ``visual.``) if its recipe hash matches, and else why not.

    Returns ``(tensors, None)`` on a match, ``(None, reason)`` otherwise; the reason is
    for the user (a missing file is the usual one for a config nobody shipped).
    """
    path = shipped_file(which, width, folder)
    if not path.is_file():
        return None, f"no shipped file {path.name}"
    try:
        tensors, meta = load_artifact(path, KIND)
    except ArtifactError as err:
        return None, str(err)
    if meta.get("recipe_hash") != recipe_hash:
        return None, f"the shipped {path.name} is for recipe {meta.get('recipe_hash')}, not {recipe_hash}"
    return {PREFIX + k: v for k, v in tensors.items()}, None


def write_shipped(
    which: str,
    width: int,
    model: torch.nn.Module,
    recipe_hash: str,
    record: dict[str, Any],
    folder: Path | None = None,
) -> Path:
    """Write ``model``'s image tower as the shipped model ``which`` of ``width``, with its recipe hash and how it was
    made."""
    path = shipped_file(which, width, folder)
    meta = {
        "recipe_hash": recipe_hash,
        "which": which,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        **record,
    }
    save_artifact(path, KIND, dict(model.get_submodule("visual").state_dict()), meta)
    return path
