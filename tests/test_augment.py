"""Batched augmentation: one call per batch, each image its own random view."""

import torch

from orthoxfer.data.mini_pools import random_shift, shift_augment
from orthoxfer.problem.tasks import FewShotTask


def test_random_shift_moves_each_image_within_the_pad():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = random_shift(images, g, pad=2)
    assert out.shape == images.shape
    for i in range(2):  # the centre 4x4 of the original is somewhere in every shifted view
        centre = images[i, :, 2:6, 2:6]
        found = any(torch.equal(out[i, :, y : y + 4, x : x + 4], centre) for y in range(5) for x in range(5))
        assert found


def test_fewshot_task_uses_a_batched_augmentation_once_per_batch():
    calls = []
    base = shift_augment(flip=True)

    def counting(images):
        calls.append(images.shape)
        return base(images)

    counting.batched = True
    images = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    task = FewShotTask("t", images, torch.zeros(6, dtype=torch.long), torch.nn.Identity(), augment=counting)
    torch.manual_seed(0)
    x, _ = task.batch(torch.arange(6))
    assert calls == [torch.Size([6, 3, 8, 8])] and x.dtype == torch.float32
    assert not torch.equal(x, task.batch(torch.arange(6), augment=False)[0])
