"""Turning bundled images into task images: stratified draws, crops from a grid, jitter, backgrounds."""

from __future__ import annotations

import numpy as np
from PIL import Image

from orthoxfer.data.bundled import IMAGE_SIZE


def stratified(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices spread as evenly as possible over the classes, in a seeded order."""
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    order = [
        idx
        for rank in range(max(map(len, per_class)))
        for group in rng.permutation(len(per_class))
        if rank < len(per_class[group])
        for idx in [per_class[group][rank]]
    ]
    return np.array(order[:n], dtype=np.int64)


def jitter(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    """Brightness/contrast jitter and Gaussian noise on an (H, W, 3) float image in [0, 1]."""
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean + rng.uniform(-strength, strength) * 0.5
    img = img + rng.normal(0, 0.03 * strength, img.shape)
    return np.clip(img, 0.0, 1.0)


def u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def grid_crops(
    rng: np.random.Generator,
    image: Image.Image,
    n: int,
    test: bool,
    side: tuple[float, float],
    turns: bool,
    strength: float,
    window: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
) -> list[np.ndarray]:
    """``n`` crops whose centres lie in the train or test cells of a 4 x 4 grid over ``window``.

    ``side`` is the crop side as a fraction of the window's shorter side; the test cells are
    the four with (row + col) % 4 == 0, so both splits cover all parts of the image.
    """
    x0, y0, x1, y1 = (
        window[0] * image.width,
        window[1] * image.height,
        window[2] * image.width,
        window[3] * image.height,
    )
    cells = [(r, c) for r in range(4) for c in range(4) if ((r + c) % 4 == 0) == test]
    short = min(x1 - x0, y1 - y0)
    out = []
    for _ in range(n):
        r, c = cells[rng.integers(len(cells))]
        cx = x0 + (c + rng.random()) * (x1 - x0) / 4
        cy = y0 + (r + rng.random()) * (y1 - y0) / 4
        s = rng.uniform(*side) * short
        cx, cy = np.clip(cx, s / 2, image.width - s / 2), np.clip(cy, s / 2, image.height - s / 2)  # stay inside
        crop = image.crop((round(cx - s / 2), round(cy - s / 2), round(cx + s / 2), round(cy + s / 2)))
        crop = crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
        if turns:
            crop = crop.rotate(90 * int(rng.integers(4)))
        out.append(u8(jitter(rng, np.asarray(crop, dtype=np.float32) / 255.0, strength)))
    return out


def crop_task(
    rng: np.random.Generator,
    images: dict[str, Image.Image],
    n_train: int,
    n_test: int,
    side: tuple[float, float],
    turns: bool,
    strength: float,
    windows: dict[str, tuple[float, float, float, float]] | None = None,
) -> tuple[list[np.ndarray], list[int], list[np.ndarray], list[int]]:
    """A "which source image" task: balanced crops per class, train and test from different cells."""
    out: tuple[list, list, list, list] = ([], [], [], [])
    for label, (name, image) in enumerate(images.items()):
        window = (windows or {}).get(name, (0.0, 0.0, 1.0, 1.0))
        for split, n in ((0, n_train), (2, n_test)):
            k = per_class(n, len(images), label)
            out[split].extend(grid_crops(rng, image, k, split == 2, side, turns, strength, window))
            out[split + 1].extend([label] * k)
    return out


def per_class(n: int, classes: int, label: int) -> int:
    """How many of ``n`` images class ``label`` gets when they are spread evenly."""
    return n // classes + (1 if label < n % classes else 0)


def background(rng: np.random.Generator, res: int = IMAGE_SIZE) -> np.ndarray:
    """A smooth random colour field with a little noise (a blurred, lit backdrop)."""
    coarse = Image.fromarray(u8(rng.random((3, 3, 3)) * rng.uniform(0.3, 1.0)))
    field = np.asarray(coarse.resize((res, res), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return np.clip(field + rng.normal(0, 0.04, field.shape), 0.0, 1.0)
