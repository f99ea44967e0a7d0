"""Few-shot pools: seeded, train split only, at the model's resolution, with the paper's augmentation."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_paper import make_dtd, make_eurosat

from orthoxfer.data import fewshot
from orthoxfer.data.fewshot import fewshot_task, paper_augmentation, pixel_transform, sample_indices
from orthoxfer.data.paper import load_split
from orthoxfer.errors import UsageError
from orthoxfer.models.loading import load_model


@pytest.fixture(scope="module")
def loaded(tiny_arch):
    return load_model(f"{tiny_arch}:none")


def test_sample_indices_seeded_and_exact():
    targets = [i % 4 for i in range(40)]
    first = sample_indices(targets, shots=10, seed=3)
    assert first == sample_indices(targets, shots=10, seed=3) and len(set(first)) == 10
    assert first != sample_indices(targets, shots=10, seed=4)
    per_class = sample_indices(targets, shots_per_class=3, seed=3)
    assert Counter(targets[i] for i in per_class) == {0: 3, 1: 3, 2: 3, 3: 3}
    # excluding an index (an unreadable image) replaces it without disturbing the other picks
    replaced = sample_indices(targets, shots=10, seed=3, exclude={first[4]})
    assert replaced[:4] == first[:4] and replaced[4:9] == first[5:] and first[4] not in replaced


def test_sample_indices_errors():
    with pytest.raises(UsageError, match="more than the 8 usable train images"):
        sample_indices([0] * 8, shots=9)
    with pytest.raises(UsageError, match="of class 1"):
        sample_indices([0, 0, 0, 1], shots_per_class=2)
    with pytest.raises(UsageError, match="exactly one"):
        sample_indices([0, 1], shots=1, shots_per_class=1)
    with pytest.raises(UsageError, match="exactly one"):
        sample_indices([0, 1])


def test_pixel_transform_has_the_eval_geometry(loaded):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    pixels = pixel_transform(loaded.preprocess)(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 16, 16)
    mean, std = torch.tensor(loaded.mean).view(3, 1, 1), torch.tensor(loaded.std).view(3, 1, 1)
    torch.testing.assert_close((pixels.float() / 255 - mean) / std, loaded.preprocess(image), atol=1e-5, rtol=0)


def test_paper_augmentation_on_uint8_images():
    augment = paper_augmentation((16, 16))
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    torch.manual_seed(0)
    views = [augment(image) for _ in range(8)]
    assert all(v.dtype == torch.uint8 and v.shape == (3, 16, 16) for v in views)
    assert sum(not torch.equal(v, image) for v in views) >= 6
    torch.manual_seed(0)
    assert all(torch.equal(a, augment(image)) for a in views)  # torch's global RNG drives it, so seeds reproduce


def test_fewshot_task_reads_train_only_and_is_seeded(tmp_path, loaded, monkeypatch):
    make_dtd(tmp_path)
    test_files = {str(f) for f in load_split("DTD", tmp_path, "test").files}
    train = load_split("DTD", tmp_path, "train")
    opened, splits = [], []
    real_open, real_load = Image.open, fewshot.load_split
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    monkeypatch.setattr(
        fewshot, "load_split", lambda name, root, split, **k: splits.append(split) or real_load(name, root, split, **k)
    )
    head = torch.nn.Identity()
    task = fewshot_task("DTD", tmp_path, loaded, head, shots=5, seed=1, workers=0)  # in-process: the spy sees it
    again = fewshot_task("DTD", tmp_path, loaded, head, shots=5, seed=1, workers=2)
    assert splits == ["train", "train"] and opened and not set(opened) & test_files
    assert task.images.dtype == torch.uint8 and task.images.shape == (5, 3, 16, 16)
    assert torch.equal(task.images, again.images) and torch.equal(task.labels, again.labels)
    chosen = sample_indices(train.targets, shots=5, seed=1)
    assert task.labels.tolist() == [train.targets[i] for i in chosen]
    assert task.head is head and task.mean == loaded.mean and task.augment is not None and task.name == "DTD"


def test_fewshot_task_per_class_and_augmented_batches(tmp_path, loaded):
    make_eurosat(tmp_path, per_class=5)
    task = fewshot_task("EuroSAT", tmp_path, loaded, torch.nn.Identity(), shots_per_class=2, seed=0)
    assert task.images.shape == (6, 3, 16, 16)  # 3 classes x 2 shots, never repeated in memory
    assert Counter(task.labels.tolist()) == {0: 2, 1: 2, 9: 2}
    torch.manual_seed(0)
    images, _ = task.batch(torch.arange(6))
    plain, _ = task.batch(torch.arange(6), augment=False)
    assert images.dtype == torch.float32 and images.shape == (6, 3, 16, 16) and not torch.equal(images, plain)
    # a validation part holds images the training part does not
    train, val = fewshot_task("EuroSAT", tmp_path, loaded, torch.nn.Identity(), shots=6, seed=0).split(0.5, seed=0)
    assert train.images.shape[0] == 3 and not any((train.images == v).all(dim=(1, 2, 3)).any() for v in val.images)
    with pytest.raises(UsageError, match="--shots 100 is more than the 12 usable train images"):
        fewshot_task("EuroSAT", tmp_path, loaded, torch.nn.Identity(), shots=100)


def test_unreadable_train_image_is_replaced_deterministically(tmp_path, loaded):
    make_eurosat(tmp_path, per_class=5)
    train = load_split("EuroSAT", tmp_path, "train")
    chosen = sample_indices(train.targets, shots=4, seed=2)
    train.files[chosen[1]].write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipping unreadable"):
        task = fewshot_task("EuroSAT", tmp_path, loaded, torch.nn.Identity(), shots=4, seed=2, workers=0)
    expected = sample_indices(train.targets, shots=4, seed=2, exclude={chosen[1]})
    assert task.labels.tolist() == [train.targets[i] for i in expected] and len(task.labels) == 4


def test_pool_images_are_every_pools_images_in_order_unaugmented():
    from orthoxfer.problem.tasks import FewShotTask, TaskPart, plain_batches, pool_images

    def flip(img):  # an augmentation that would show if it were applied
        return img.flip(-1)

    pools = [
        FewShotTask(
            name,
            torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8),
            torch.arange(n),
            torch.nn.Identity(),
            augment=flip,
        )
        for name, n in (("a", 5), ("b", 2))
    ]
    batches = pool_images(pools, 2, torch.device("cpu"))
    assert [len(b) for b in batches] == [2, 2, 1, 2]  # split per pool, never across two
    expected = torch.cat([p.normalise(p.images) for p in pools])
    assert torch.equal(torch.cat(batches), expected)
    assert [len(images) for images, _ in plain_batches(pools[0], 3)] == [3, 2]
    part = TaskPart(pools[0], torch.tensor([4, 0, 2]))  # a validation part, as finetune --val-fraction scores
    assert torch.equal(torch.cat([labels for _, labels in plain_batches(part, 2)]), torch.tensor([4, 0, 2]))
