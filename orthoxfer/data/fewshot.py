"""Few-shot pools from a dataset's train split, and their augmentation recipes (orthoxfer's, the paper's text's,
its released code's: :data:`AUGMENTATIONS`).

The pool is drawn from the train split only (the test split is never opened), with
its own seeded generator: ``shots`` takes the first N images of a seeded shuffle of
the whole split, as the reference does ("the first 100 images of a shuffled train
split"); ``shots_per_class`` the first K of each class. An image that cannot be read
is replaced by the next one in the same order, so a draw stays deterministic.
Images are stored as uint8 at the model's resolution (open_clip's own resize and
crop) and augmented per batch by :class:`~orthoxfer.problem.tasks.FewShotTask`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset
from torchvision.transforms import Compose, PILToTensor, ToTensor, v2

from orthoxfer.data.paper import CORRUPT, ImageSplit, load_split, make_loader
from orthoxfer.errors import UsageError
from orthoxfer.models.loading import LoadedModel
from orthoxfer.problem.tasks import FewShotTask


def sample_indices(
    targets: Sequence[int],
    shots: int | None = None,
    shots_per_class: int | None = None,
    seed: int = 0,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> list[int]:
    """Indices into ``targets`` (a train split's labels): exactly one of ``shots`` / ``shots_per_class``.

    ``exclude`` removes indices (unreadable images) without changing which of the others are chosen.
    """
    if (shots is None) == (shots_per_class is None):
        raise UsageError("give exactly one of --shots and --shots-per-class")
    wanted = shots if shots is not None else shots_per_class
    if wanted is None or wanted < 1:
        raise UsageError(f"the number of shots must be at least 1 (got {wanted})")
    generator = torch.Generator().manual_seed(seed)
    order = [i for i in torch.randperm(len(targets), generator=generator).tolist() if i not in exclude]
    if shots is not None:
        if shots > len(order):
            raise UsageError(f"--shots {shots} is more than the {len(order)} usable train images")
        return order[:shots]
    chosen: list[int] = []
    for cls in sorted(set(targets)):
        members = [i for i in order if targets[i] == cls]
        if len(members) < wanted:
            raise UsageError(
                f"--shots-per-class {wanted} is more than the {len(members)} usable train images of class {cls}"
            )
        chosen += members[:wanted]
    return chosen


def paper_augmentation(size: tuple[int, int], crop_scale: tuple[float, float] = (0.5, 1.0)) -> Callable:
    """orthoxfer's augmentation of one uint8 (3, H, W) image, drawn from torch's global RNG.

    Random resized crop, horizontal flip, and with p = 0.8 one of grayscale / solarize /
    gaussian blur (sigma 0.1-2, the reference's blur radius). The paper gives no crop
    scale; (0.5, 1) keeps most of the object, which small digits and signs need.
    """
    return v2.Compose(
        [v2.RandomResizedCrop(size, scale=crop_scale, antialias=True), v2.RandomHorizontalFlip(p=0.5), _one_of(size)]
    )


def _one_of(size: tuple[int, int], solarize: bool = True) -> v2.RandomApply:
    """With p = 0.8, one of grayscale / (solarize) / gaussian blur: the released code's colour step."""
    kernel = max(3, (min(size) // 10) | 1)  # odd, about a tenth of the image, as in SimCLR-style blurs
    choices = [
        v2.Grayscale(num_output_channels=3),
        *([v2.RandomSolarize(threshold=128, p=1.0)] if solarize else []),
        v2.GaussianBlur(kernel_size=kernel, sigma=(0.1, 2.0)),
    ]
    return v2.RandomApply([v2.RandomChoice(choices)], p=0.8)


def text_augmentation(size: tuple[int, int]) -> Callable:
    """The paper's text (Sec. 4.2: "horizontal flip, grayscale, blur"): no crop, no solarize.

    The text gives no probabilities; the released code's are used (flip 0.5, one of the
    others with p = 0.8).
    """
    return v2.Compose([v2.RandomHorizontalFlip(p=0.5), _one_of(size, solarize=False)])


def code_augmentation(size: tuple[int, int]) -> Callable:
    """The released code's recipe: random resized crop (0.9, 1), flip, one of grayscale / solarize / blur.

    The code crops the raw image; a pool holds the model's centre crop, so here the crop
    is of that: the same on square images, a little less of the frame on oblong ones
    (Cars, DTD, SUN397; docs/paper-protocol.md).
    """
    return paper_augmentation(size, crop_scale=(0.9, 1.0))


# name -> recipe for a pool of images of a given size (AlignSettings.augmentation; "suite" = the suite's own)
AUGMENTATIONS: dict[str, Callable[[tuple[int, int]], Callable | None]] = {
    "orthoxfer": paper_augmentation,
    "paper-text": text_augmentation,
    "paper-code": code_augmentation,
    "none": lambda size: None,
}


def augmentation(name: str, size: tuple[int, int]) -> Callable | None:
    """The recipe ``name`` for images of ``size``; ``suite`` is orthoxfer's own on the paper's datasets."""
    key = "orthoxfer" if name == "suite" else name
    if key not in AUGMENTATIONS:
        raise UsageError(f"unknown augmentation {name!r}; choose one of suite, {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[key](size)


def pixel_transform(preprocess: Compose) -> Compose:
    """open_clip's eval transform up to its tensor conversion, ending in uint8 instead of normalised floats.

    The few-shot images then have exactly the geometry (resize mode, interpolation,
    crop) the model is evaluated with; :meth:`FewShotTask.normalise` does the rest.
    """
    steps = list(preprocess.transforms)
    cut = next((i for i, t in enumerate(steps) if isinstance(t, ToTensor)), None)
    if cut is None:
        raise ValueError(f"expected an open_clip eval transform with a ToTensor step, got {preprocess}")
    return Compose([*steps[:cut], PILToTensor()])


def _read_pool(
    train: ImageSplit, indices: list[int], workers: int | None
) -> tuple[dict[int, tuple[torch.Tensor, int]], set[int]]:
    """Images and labels of ``indices`` read through a DataLoader, and the indices that could not be read."""
    loaded: dict[int, tuple[torch.Tensor, int]] = {}
    unreadable: set[int] = set()
    loader = make_loader(Subset(train, indices), batch_size=64, workers=workers)
    position = iter(indices)
    for images, labels in loader:
        for image, label in zip(images, labels.tolist()):
            index = next(position)
            if label == CORRUPT:
                unreadable.add(index)
            else:
                loaded[index] = (image, label)
    return loaded, unreadable


def fewshot_task(
    name: str,
    root: Path | str,
    model: LoadedModel,
    head: nn.Module,
    shots: int | None = None,
    shots_per_class: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    recipe: str = "suite",
) -> FewShotTask:
    """A :class:`FewShotTask` drawn from the train split of dataset ``name`` for ``model``.

    The pool carries the augmentation ``recipe`` names (:data:`AUGMENTATIONS`); whether
    and how often each image is seen augmented per epoch (``--augment M``) is the training loop's choice, which
    repeats indices, never pixels. ``head`` is the frozen head for this task (see
    :func:`orthoxfer.models.heads.zero_shot_head`).
    """
    train = load_split(name, root, "train", transform=pixel_transform(model.preprocess))
    pool: dict[int, tuple[torch.Tensor, int]] = {}
    skipped: set[int] = set()
    while True:
        indices = sample_indices(train.targets, shots, shots_per_class, seed, exclude=skipped)
        missing = [i for i in indices if i not in pool]
        if not missing:
            break
        loaded, unreadable = _read_pool(train, missing, workers)
        pool.update(loaded)
        skipped |= unreadable
    height, width = pool[indices[0]][0].shape[-2:]
    return FewShotTask(
        name=train.name,
        images=torch.stack([pool[i][0] for i in indices]),
        labels=torch.tensor([pool[i][1] for i in indices], dtype=torch.int64),
        head=head,
        mean=model.mean,
        std=model.std,
        augment=augmentation(recipe, (height, width)),
    )
