"""The two pre-training corpora of the mini models, generated offline.

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
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from orthoxfer.data.bundled import IMAGE_SIZE, DataError, mpl
from orthoxfer.errors import UsageError

CorpusName = Literal["a", "b"]


@dataclass(frozen=True)
class Corpus:
    """A pre-training corpus: images (N, 3, 32, 32) uint8 and one caption per image."""

    name: str
    images: torch.Tensor
    captions: list[str]
    sources: tuple[str, ...]  # the files and generators it is made from


_NAMED_COLOURS = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 140, 20),
    "purple": (140, 50, 180),
}
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
    palette = torch.from_numpy(np.concatenate([base, colours], 1).astype(np.float32))  # index 0: the ground
    t = {
        k: torch.from_numpy(v.astype(np.float32))[:, :, None, None]
        for k, v in {"r": r, "cx": cx, "cy": cy, "aspect": aspect}.items()
    }
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
    canvas = torch.gather(palette, 1, top.view(n, -1, 1).expand(-1, -1, 3)).view(n, res, res, 3)
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
        path = mpl("fonts", "ttf", name)
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
    theta = torch.tensor(
        np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1), dtype=torch.float32
    )
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
        canvas = 0.5 * canvas + 0.5 * canvas.mean(
            axis=(1, 2), keepdims=True
        )  # leaves at half contrast: the glyph stands out
        glyph, char = _place_glyphs(rng, masks, n)
        pick = rng.integers(0, len(colours), n)
        luminance = canvas.mean(axis=(1, 2, 3))
        low_contrast = np.abs(colours[pick].mean(1) - luminance) < 0.25
        pick = np.where(
            low_contrast, np.where(luminance > 0.5, colour_names.index("black"), colour_names.index("white")), pick
        )
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
