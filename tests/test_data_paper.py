"""The eight loaders on tiny trees built here in each documented layout.

Where torchvision has the dataset, torchvision's own class reads the same tree and
must agree with orthoxfer's reader (same files, same classes), so the layout really
is torchvision's. The ``make_*`` builders are reused by the few-shot and evaluation tests.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torchvision
import typer
from PIL import Image
from typer.testing import CliRunner

from orthoxfer.cli.data import data_app
from orthoxfer.data.classnames import CLASSNAMES, FOLDERS, TEMPLATES
from orthoxfer.data.paper import (
    CORRUPT,
    DATASETS,
    DataMissingError,
    check_data_root,
    dataset,
    load_split,
)
from orthoxfer.errors import UsageError

runner = CliRunner()


def _image(path: Path, seed: int, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def make_cars(root: Path) -> None:
    base = root / "stanford_cars"
    # a meta file in its own order: labels must follow the names, not the positions
    names = ["Acura RL Sedan 2012", "smart fortwo Convertible 2012", "AM General Hummer SUV 2000"]
    (base / "devkit").mkdir(parents=True)
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(names, dtype=object)})
    annotations = {"train": base / "devkit" / "cars_train_annos.mat", "test": base / "cars_test_annos_withlabels.mat"}
    for split, annos in annotations.items():
        records = []
        for i in range(6 if split == "train" else 3):
            fname = f"{i:05d}.jpg"
            _image(base / f"cars_{split}" / fname, i)
            records.append((fname, i % 3 + 1))
        sio.savemat(annos, {"annotations": np.array(records, dtype=[("fname", "O"), ("class", "O")])})


def make_dtd(root: Path) -> None:
    base = root / "dtd" / "dtd"
    lists = {"train1.txt": [], "val1.txt": [], "test1.txt": []}
    for c, cls in enumerate(["banded", "zigzagged", "polka-dotted"]):
        for i, listing in enumerate(["train1.txt", "train1.txt", "val1.txt", "test1.txt"]):
            name = f"{cls}/{cls}_{i:04d}.jpg"
            _image(base / "images" / name, 10 * c + i)
            lists[listing].append(name)
    (base / "labels").mkdir(parents=True)
    for listing, lines in lists.items():
        (base / "labels" / listing).write_text("\n".join(lines) + "\n")


def make_eurosat(root: Path, per_class: int = 10, classes=("AnnualCrop", "Forest", "SeaLake")) -> None:
    for c, cls in enumerate(classes):
        for i in range(per_class):
            _image(root / "eurosat" / "2750" / cls / f"{cls}_{i + 1}.jpg", 100 * c + i)


def make_gtsrb(root: Path) -> None:
    base = root / "gtsrb"
    for cls in (0, 14, 42):
        for i in range(2):
            _image(base / "GTSRB" / "Training" / f"{cls:05d}" / f"{cls:05d}_{i:05d}.ppm", cls + i)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, cls in enumerate((14, 42, 0, 14)):
        _image(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", 50 + i)
        rows.append(f"{i:05d}.ppm;20;20;1;1;19;19;{cls}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def _idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = 0x0803 if array.ndim == 3 else 0x0801
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def make_resisc45(root: Path) -> None:
    base = root / "resisc45"
    lists = {"train": [], "test": []}
    for c, cls in enumerate(["airplane", "baseball_diamond", "thermal_power_station"]):
        for i in range(1, 4):
            name = f"{cls}_{i:03d}.jpg"
            _image(base / "NWPU-RESISC45" / cls / name, 10 * c + i)
            lists["test" if i == 3 else "train"].append(name)
    for split, names in lists.items():
        (base / f"resisc45-{split}.txt").write_text("\n".join(names) + "\n")


def make_sun397(root: Path) -> None:
    base = root / "SUN397"
    classes = ["a/abbey", "a/apartment_building/outdoor", "y/youth_hostel"]
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("".join(f"/{c}\n" for c in classes))
    lists = {"Training_01.txt": [], "Testing_01.txt": []}
    for c, cls in enumerate(classes):
        for i in range(3):
            rel = f"{cls}/sun_{c}{i}.jpg"
            _image(base / rel, 10 * c + i)
            lists["Testing_01.txt" if i == 2 else "Training_01.txt"].append("/" + rel)
    for listing, lines in lists.items():
        (base / listing).write_text("\n".join(lines) + "\n")


def make_svhn(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "svhn").mkdir(parents=True)
    for split, n in (("train", 12), ("test", 5)):
        digits = np.arange(n) % 10
        y = np.where(digits == 0, 10, digits).reshape(n, 1)  # SVHN stores 0 as 10
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        sio.savemat(root / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})


MAKERS = {
    "Cars": make_cars,
    "DTD": make_dtd,
    "EuroSAT": make_eurosat,
    "GTSRB": make_gtsrb,
    "MNIST": make_mnist,
    "RESISC45": make_resisc45,
    "SUN397": make_sun397,
    "SVHN": make_svhn,
}

EXPECTED = {  # name: (train size, test size)
    "Cars": (6, 3),
    "DTD": (9, 3),
    "EuroSAT": (27, 3),
    "GTSRB": (6, 4),
    "MNIST": (12, 5),
    "RESISC45": (6, 3),
    "SUN397": (6, 3),
    "SVHN": (12, 5),
}


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for make in MAKERS.values():
        make(root)
    return root


def _canonical(name: str, key: str) -> int:
    return FOLDERS[name].index(key)


def test_class_lists_and_templates_cover_the_eight_datasets():
    sizes = {name: len(names) for name, names in CLASSNAMES.items()}
    assert sizes == {
        "Cars": 196,
        "DTD": 47,
        "EuroSAT": 10,
        "GTSRB": 43,
        "MNIST": 10,
        "RESISC45": 45,
        "SUN397": 397,
        "SVHN": 10,
    }
    assert list(DATASETS) == list(CLASSNAMES) == list(TEMPLATES)
    assert {name: len(t) for name, t in TEMPLATES.items()} == {
        "Cars": 8,
        "DTD": 8,
        "EuroSAT": 3,
        "GTSRB": 3,
        "MNIST": 1,
        "RESISC45": 18,
        "SUN397": 2,
        "SVHN": 1,
    }
    for templates in TEMPLATES.values():
        assert all(t.count("{}") == 1 for t in templates)
    for name, folders in FOLDERS.items():
        assert len(folders) == len(set(folders)) == len(CLASSNAMES[name])
    assert CLASSNAMES["SUN397"][FOLDERS["SUN397"].index("a/apartment_building/outdoor")] == "apartment building outdoor"
    assert CLASSNAMES["RESISC45"][2] == "baseball diamond"


@pytest.mark.parametrize("name", list(MAKERS))
def test_every_loader_reads_its_layout(full_root, name):
    for split, expected in zip(("train", "test"), EXPECTED[name]):
        data = load_split(name, full_root, split, transform=lambda im: np.asarray(im).shape)
        assert len(data) == expected and data.classnames == CLASSNAMES[name]
        shape, _ = data[0]
        assert len(shape) == 3 and shape[2] == 3  # decoded as RGB
        assert all(0 <= t < len(CLASSNAMES[name]) for t in data.targets)


def test_cars_labels_follow_meta_names_like_torchvision(full_root):
    ours = load_split("Cars", full_root, "train")
    theirs = torchvision.datasets.StanfordCars(full_root, split="train", download=False)
    assert [Path(p) for p, _ in theirs._samples] == ours.files
    assert [_canonical("Cars", theirs.classes[t]) for _, t in theirs._samples] == ours.targets
    assert sorted(set(ours.targets)) == [0, 1, 195]  # Hummer, Acura RL, smart: the canonical indices


def test_dtd_gtsrb_match_torchvision(full_root):
    tv_train = [torchvision.datasets.DTD(full_root, split=s, download=False) for s in ("train", "val")]
    ours = load_split("DTD", full_root, "train")
    assert ours.files == [f for d in tv_train for f in d._image_files]
    assert ours.targets == [_canonical("DTD", d.classes[t]) for d in tv_train for t in d._labels]
    tv_test = torchvision.datasets.DTD(full_root, split="test", download=False)
    assert load_split("DTD", full_root, "test").files == tv_test._image_files
    theirs = torchvision.datasets.GTSRB(full_root, split="test", download=False)
    ours = load_split("GTSRB", full_root, "test")
    assert list(zip(map(str, ours.files), ours.targets)) == theirs._samples
    # train: torchvision numbers the folders present; orthoxfer reads the class id from the folder name
    theirs = torchvision.datasets.GTSRB(full_root, split="train", download=False)
    ours = load_split("GTSRB", full_root, "train")
    assert sorted(map(str, ours.files)) == sorted(p for p, _ in theirs._samples)
    assert sorted(set(ours.targets)) == [0, 14, 42]


def test_eurosat_seeded_split_is_stratified_disjoint_and_stable(full_root):
    train, test = (load_split("EuroSAT", full_root, s) for s in ("train", "test"))
    everything = torchvision.datasets.EuroSAT(full_root, download=False)
    assert sorted(map(str, train.files + test.files)) == sorted(p for p, _ in everything.samples)
    assert not set(train.files) & set(test.files)
    assert sorted(test.targets) == [0, 1, 9]  # 10% of each class: one image per class of ten
    assert load_split("EuroSAT", full_root, "test").files == test.files


def test_sun397_partitions_and_classes_match_torchvision(full_root):
    train, test = (load_split("SUN397", full_root, s) for s in ("train", "test"))
    theirs = torchvision.datasets.SUN397(full_root, download=False)
    assert sorted(train.files + test.files) == sorted(theirs._image_files)
    label_of = dict(zip(theirs._image_files, theirs._labels))
    # torchvision drops the "/a/" letter folder from its class names
    assert [theirs.classes[label_of[f]] for f in train.files] == [FOLDERS["SUN397"][t][2:] for t in train.targets]


def test_mnist_and_svhn_digits(full_root):
    assert load_split("MNIST", full_root, "test").targets == [0, 1, 2, 3, 4]
    svhn = load_split("SVHN", full_root, "train")
    assert svhn.targets[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 means the digit 0
    image, _ = svhn[3]
    assert image.size == (32, 32)


def test_corrupt_image_is_skipped_with_a_warning_not_fatal(tmp_path):
    make_resisc45(tmp_path)
    bad = tmp_path / "resisc45" / "NWPU-RESISC45" / "airplane" / "airplane_001.jpg"
    bad.write_bytes(b"not a jpeg")
    data = load_split("RESISC45", tmp_path, "train", transform=lambda im: im.size)
    with pytest.warns(UserWarning, match="airplane_001.jpg"):
        _, label = data[0]
    assert label == CORRUPT
    assert data[1][1] == 0  # the next image reads normally


def test_missing_data_names_dataset_and_path(tmp_path):
    make_dtd(tmp_path)
    (tmp_path / "dtd" / "dtd" / "labels" / "test1.txt").unlink()
    with pytest.raises(DataMissingError, match=r"^DTD: .*test1\.txt not found"):
        load_split("DTD", tmp_path, "test")
    with pytest.raises(DataMissingError, match="Cars: .*stanford_cars"):
        load_split("Cars", tmp_path, "train")
    with pytest.raises(UsageError, match="Cars, DTD, EuroSAT"):
        dataset("ImageNet")
    assert dataset("eurosat").name == "EuroSAT"


def test_check_data_root_reports_found_missing_and_layout(tmp_path):
    make_svhn(tmp_path)
    make_gtsrb(tmp_path)
    (tmp_path / "gtsrb" / "GT-final_test.csv").unlink()
    checks = {c.name: c for c in check_data_root(tmp_path)}
    assert checks["SVHN"].found and checks["SVHN"].counts == {"train": 12, "test": 5}
    gtsrb = checks["GTSRB"]
    assert not gtsrb.found and gtsrb.counts == {"train": 6} and "GT-final_test.csv" in gtsrb.problem
    assert "gtsrb/GT-final_test.csv" in gtsrb.layout
    assert not checks["Cars"].found and "cars_meta.mat" in checks["Cars"].layout


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(data_app, name="data")
    return app


def test_data_check_command(tmp_path, full_root):
    result = runner.invoke(_cli(), ["data", "check", "--data-root", str(full_root)])
    assert result.exit_code == 0, result.output
    assert result.output.count("found") == 8 and "missing" not in result.output

    make_mnist(tmp_path)
    result = runner.invoke(_cli(), ["data", "check", "--data-root", str(tmp_path)])
    assert result.exit_code == 1
    assert "MNIST" in result.output and "SUN397/{Training_01.txt, Testing_01.txt}" in result.output
    result = runner.invoke(_cli(), ["data", "check", "--data-root", str(tmp_path), "--json"])
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["MNIST"]["found"] and rows["MNIST"]["counts"] == {"train": 12, "test": 5} and not rows["SVHN"]["found"]

    result = runner.invoke(_cli(), ["data", "check", "--data-root", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "is not a directory" in result.output and "Traceback" not in result.output
