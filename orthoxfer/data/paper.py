"""The paper's eight datasets, read from a local data root in fixed layouts; never downloaded.

Where torchvision has the dataset, the layout under the data root is exactly the one
torchvision's class reads (``download=False``), so a root prepared for torchvision or
for task arithmetic works as is; RESISC45 uses the torchgeo / task-arithmetic layout
(images plus official split lists); EuroSAT has no official split, so a fixed seeded
10% per class is its test split. The readers here parse those layouts directly:
they need no checksums (tests build tiny trees in the same layouts), never glob a
hundred thousand files, and map every class to the label order of
:mod:`orthoxfer.data.classnames`, so a head built from those names always matches.

An image that cannot be decoded is not fatal: it comes back with label ``CORRUPT``
(-100, the ``ignore_index`` of ``F.cross_entropy``), so training ignores it and
evaluation counts it as skipped.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.io import loadmat
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.mnist import read_image_file, read_label_file

from orthoxfer.data.classnames import CLASSNAMES, FOLDERS, TEMPLATES
from orthoxfer.errors import OrthoxferError, OrthoxferWarning, UsageError

SPLITS = ("train", "test")
CORRUPT = -100
EUROSAT_TEST_FRACTION = 0.1
EUROSAT_SPLIT_SEED = 0


class DataMissingError(OrthoxferError):
    """A dataset file or folder that is not where the documented layout puts it, or not what it should hold."""

    def __init__(self, name: str, what: str) -> None:
        self.what = what
        super().__init__(f"{name}: {what} (`orthoxfer data check` shows the expected layout)")


class ImageSplit(Dataset):
    """One split of one dataset: ``(transform(image), label)`` pairs in the paper's label order."""

    def __init__(self, name: str, split: str, targets: Sequence[int], transform: Callable | None = None) -> None:
        self.name = name
        self.split = split
        self.targets = list(targets)
        self.transform = transform

    @property
    def classnames(self) -> list[str]:
        return CLASSNAMES[self.name]

    def __len__(self) -> int:
        return len(self.targets)

    def read(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"{self.name} {self.split} image {index}"

    def __getitem__(self, index: int):
        try:
            image = self.read(index).convert("RGB")
            label = self.targets[index]
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for missing, truncated, garbled files
            warnings.warn(f"skipping unreadable {self.describe(index)}: {exc}", OrthoxferWarning, stacklevel=2)
            image, label = Image.new("RGB", (32, 32)), CORRUPT
        return (self.transform(image) if self.transform is not None else image), label


class FileSplit(ImageSplit):
    def __init__(self, name: str, split: str, files: Sequence[Path], targets: Sequence[int]) -> None:
        super().__init__(name, split, targets)
        self.files = list(files)

    def read(self, index: int) -> Image.Image:
        return Image.open(self.files[index])

    def describe(self, index: int) -> str:
        return f"{self.name} {self.split} image {self.files[index]}"


class ArraySplit(ImageSplit):
    """Datasets shipped as arrays (MNIST, SVHN): ``images`` is (N, H, W) or (N, H, W, 3) uint8."""

    def __init__(self, name: str, split: str, images: np.ndarray, targets: Sequence[int]) -> None:
        super().__init__(name, split, targets)
        self.images = images

    def read(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


# ----------------------------------------------------------------------------- readers
def _need(name: str, path: Path) -> Path:
    if not path.exists():
        raise DataMissingError(name, f"{path} not found")
    return path


def _labeller(name: str, where: Path) -> Callable[[str], int]:
    index = {key: i for i, key in enumerate(FOLDERS[name])}

    def label(key: str) -> int:
        if key not in index:
            raise DataMissingError(name, f"unknown class {key!r} in {where}; is this the right dataset?")
        return index[key]

    return label


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def _class_folders(name: str, root: Path) -> list[tuple[Path, int]]:
    """``root/<class>/**/image`` -> (file, label), classes named as in ``FOLDERS[name]``."""
    label = _labeller(name, root)
    return [
        (file, label(folder.name))
        for folder in sorted(p for p in _need(name, root).iterdir() if p.is_dir())
        for file in _image_files(folder)
    ]


def _files(name: str, split: str, pairs: Sequence[tuple[Path, int]]) -> FileSplit:
    return FileSplit(name, split, [f for f, _ in pairs], [t for _, t in pairs])


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_cars(root: Path, split: str) -> ImageSplit:
    base = root / "stanford_cars"
    devkit = base / "devkit"
    annos = devkit / "cars_train_annos.mat" if split == "train" else base / "cars_test_annos_withlabels.mat"
    images = _need("Cars", base / ("cars_train" if split == "train" else "cars_test"))
    meta = _need("Cars", devkit / "cars_meta.mat")
    names = np.atleast_1d(loadmat(meta, squeeze_me=True)["class_names"]).tolist()
    label = _labeller("Cars", meta)
    records = np.atleast_1d(loadmat(_need("Cars", annos), squeeze_me=True)["annotations"])
    return _files("Cars", split, [(images / str(r["fname"]), label(names[int(r["class"]) - 1])) for r in records])


def read_dtd(root: Path, split: str) -> ImageSplit:
    base = root / "dtd" / "dtd"
    # train = official train1 + val1 (3,760 images, task arithmetic's DTD train set); test = test1
    lists = ["train1.txt", "val1.txt"] if split == "train" else ["test1.txt"]
    lines = [line for f in lists for line in _read_lines(_need("DTD", base / "labels" / f))]
    label = _labeller("DTD", base / "labels")
    return _files("DTD", split, [(base / "images" / line, label(line.split("/")[0])) for line in lines])


def read_eurosat(root: Path, split: str) -> ImageSplit:
    pairs = _class_folders("EuroSAT", root / "eurosat" / "2750")
    chosen = []
    for cls in sorted({t for _, t in pairs}):
        members = [p for p in pairs if p[1] == cls]
        order = torch.randperm(len(members), generator=torch.Generator().manual_seed(EUROSAT_SPLIT_SEED)).tolist()
        n_test = int(EUROSAT_TEST_FRACTION * len(members) + 0.5)  # half up, not Python's half-to-even
        picked = order[:n_test] if split == "test" else order[n_test:]
        chosen += [members[i] for i in sorted(picked)]
    return _files("EuroSAT", split, chosen)


def read_gtsrb(root: Path, split: str) -> ImageSplit:
    base = root / "gtsrb"
    if split == "train":
        folders = sorted(p for p in _need("GTSRB", base / "GTSRB" / "Training").iterdir() if p.is_dir())
        pairs = [(f, int(folder.name)) for folder in folders for f in sorted(folder.rglob("*.ppm"))]
        return _files("GTSRB", split, pairs)
    images = _need("GTSRB", base / "GTSRB" / "Final_Test" / "Images")
    with open(_need("GTSRB", base / "GT-final_test.csv"), newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";", skipinitialspace=True))
    return _files("GTSRB", split, [(images / r["Filename"], int(r["ClassId"])) for r in rows])


def read_mnist(root: Path, split: str) -> ImageSplit:
    raw = root / "MNIST" / "raw"
    prefix = "train" if split == "train" else "t10k"
    images = read_image_file(str(_need("MNIST", raw / f"{prefix}-images-idx3-ubyte")))
    labels = read_label_file(str(_need("MNIST", raw / f"{prefix}-labels-idx1-ubyte")))
    return ArraySplit("MNIST", split, images.numpy(), labels.tolist())


def read_resisc45(root: Path, split: str) -> ImageSplit:
    base = root / "resisc45"
    images = _need("RESISC45", base / "NWPU-RESISC45")
    listing = _need("RESISC45", base / f"resisc45-{split}.txt")
    label = _labeller("RESISC45", listing)
    # the lists hold bare file names such as baseball_diamond_001.jpg; the class is the name minus the number
    names = _read_lines(listing)
    return _files("RESISC45", split, [(images / n.rsplit("_", 1)[0] / n, label(n.rsplit("_", 1)[0])) for n in names])


def read_sun397(root: Path, split: str) -> ImageSplit:
    base = root / "SUN397"
    listing = _need("SUN397", base / ("Training_01.txt" if split == "train" else "Testing_01.txt"))
    label = _labeller("SUN397", listing)
    lines = [line.lstrip("/") for line in _read_lines(listing)]  # "/a/abbey/sun_x.jpg" -> "a/abbey/sun_x.jpg"
    return _files("SUN397", split, [(base / line, label(line.rsplit("/", 1)[0])) for line in lines])


def read_svhn(root: Path, split: str) -> ImageSplit:
    mat = loadmat(_need("SVHN", root / "svhn" / f"{split}_32x32.mat"))
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN labels the digit 0 as 10
    return ArraySplit("SVHN", split, np.ascontiguousarray(mat["X"].transpose(3, 0, 1, 2)), labels.tolist())


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class PaperDataset:
    name: str
    read: Callable[[Path, str], ImageSplit]
    layout: str  # the files expected under the data root, as `data check` prints them
    source: str  # where to get it

    @property
    def classnames(self) -> list[str]:
        return CLASSNAMES[self.name]

    @property
    def templates(self) -> list[str]:
        return TEMPLATES[self.name]


DATASETS: dict[str, PaperDataset] = {
    d.name: d
    for d in [
        PaperDataset(
            "Cars",
            read_cars,
            "stanford_cars/devkit/{cars_meta.mat, cars_train_annos.mat}\n"
            "stanford_cars/cars_train/*.jpg\n"
            "stanford_cars/cars_test/*.jpg\n"
            "stanford_cars/cars_test_annos_withlabels.mat",
            "Stanford Cars (torchvision StanfordCars layout); mirrors: Kaggle 'stanford-cars-dataset'",
        ),
        PaperDataset(
            "DTD",
            read_dtd,
            "dtd/dtd/images/<class>/*.jpg\ndtd/dtd/labels/{train1.txt, val1.txt, test1.txt}",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/ (dtd-r1.0.1.tar.gz, extracted into dtd/)",
        ),
        PaperDataset(
            "EuroSAT",
            read_eurosat,
            "eurosat/2750/<AnnualCrop|Forest|...|SeaLake>/*.jpg",
            "EuroSAT RGB, https://zenodo.org/records/7711810 (EuroSAT_RGB.zip, its folder renamed eurosat/2750)",
        ),
        PaperDataset(
            "GTSRB",
            read_gtsrb,
            "gtsrb/GTSRB/Training/<00000..00042>/*.ppm\ngtsrb/GTSRB/Final_Test/Images/*.ppm\ngtsrb/GT-final_test.csv",
            "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/ "
            "(GTSRB-Training_fixed.zip, GTSRB_Final_Test_Images.zip, GTSRB_Final_Test_GT.zip, all into gtsrb/)",
        ),
        PaperDataset(
            "MNIST",
            read_mnist,
            "MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte}",
            "https://ossci-datasets.s3.amazonaws.com/mnist/ (the four .gz files, gunzipped)",
        ),
        PaperDataset(
            "RESISC45",
            read_resisc45,
            "resisc45/NWPU-RESISC45/<class>/<class>_NNN.jpg\nresisc45/{resisc45-train.txt, resisc45-test.txt}",
            "NWPU-RESISC45 images (e.g. Kaggle or torchgeo) + split lists from "
            "https://storage.googleapis.com/remote_sensing_representations/resisc45-{train,test}.txt",
        ),
        PaperDataset(
            "SUN397",
            read_sun397,
            "SUN397/<letter>/<class>[/<subclass>]/sun_*.jpg\nSUN397/{Training_01.txt, Testing_01.txt}",
            "https://vision.princeton.edu/projects/2010/SUN/ (SUN397.tar.gz + Partitions.zip into SUN397/)",
        ),
        PaperDataset(
            "SVHN",
            read_svhn,
            "svhn/{train_32x32.mat, test_32x32.mat}",
            "http://ufldl.stanford.edu/housenumbers/ (format 2: train_32x32.mat, test_32x32.mat)",
        ),
    ]
}


def dataset(name: str) -> PaperDataset:
    """The dataset called ``name`` (any case), or a UsageError listing the eight."""
    for key, spec in DATASETS.items():
        if key.lower() == name.strip().lower():
            return spec
    raise UsageError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def load_split(name: str, root: Path | str, split: str, transform: Callable | None = None) -> ImageSplit:
    """One split (``train`` or ``test``) of one dataset under ``root``; OrthoxferError naming what is missing."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"data root {root} is not a directory")
    spec = dataset(name)
    data = spec.read(root, split)
    n_classes = len(spec.classnames)
    bad = sorted({t for t in data.targets if not 0 <= t < n_classes})
    if bad:
        raise DataMissingError(
            spec.name, f"{split} labels {bad[:5]} outside 0..{n_classes - 1}; is this the right dataset?"
        )
    data.transform = transform
    return data


@dataclass
class DatasetCheck:
    name: str
    counts: dict[str, int]  # images listed per split that was found
    problem: str | None  # the first thing missing or wrong, or None
    layout: str
    source: str

    @property
    def found(self) -> bool:
        return self.problem is None


def check_data_root(root: Path | str) -> list[DatasetCheck]:
    """Per dataset: images per split, or the first thing missing and the layout expected."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"data root {root} is not a directory")
    checks = []
    for spec in DATASETS.values():
        counts: dict[str, int] = {}
        problem = None
        for split in SPLITS:
            try:
                counts[split] = len(load_split(spec.name, root, split))
            except DataMissingError as exc:
                problem = problem or exc.what
            except Exception as exc:  # noqa: BLE001 - a garbled metadata file must not stop the other checks
                problem = problem or f"{split} split unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        if problem is None and not all(counts.values()):
            problem = "a split has no images"
        checks.append(DatasetCheck(spec.name, counts, problem, spec.layout, spec.source))
    return checks


def make_loader(
    data: Dataset,
    batch_size: int,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    shuffle: bool = False,
) -> DataLoader:
    """A DataLoader with worker processes and, when the batches go to a GPU, pinned memory.

    Data that fits in one batch is read in the calling process unless ``workers`` is
    given: workers could overlap nothing with a single batch, and each costs a process
    start (tens of ms), paid again every time a small test set is scored.
    """
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if isinstance(data, Sized) and len(data) > batch_size else 0
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
    )
