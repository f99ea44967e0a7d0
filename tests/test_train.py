"""Fine-tuning the sites: task vectors of each kind, and the few-shot baseline's data."""

import copy

import pytest
import torch
from torch import nn

from orthoxfer.evaluation.accuracy import accuracy
from orthoxfer.fit.finetune import FinetuneSettings, finetune
from orthoxfer.fit.loop import task_batch
from orthoxfer.problem.tasks import FewShotTask


def colour_task(n=96, seed=0, head_seed=1):
    """Class = the brightest channel: learnable by a tiny CLIP's image tower."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.randint(0, 100, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels] += 120
    torch.manual_seed(head_seed)
    head = nn.Linear(16, 3).requires_grad_(False)
    return FewShotTask("colour", images, labels, head)


def acc(model, task):
    return accuracy(model, task.head, [task.batch(torch.arange(len(task.labels)), augment=False)])


def settings(kind, **kw):
    base = dict(
        kind=kind, lr=3e-3, weight_decay=0.0, steps=60, warmup=5, batch_size=32, log_every=0, rank=2, lora_alpha=4
    )
    base.update(kw)
    return FinetuneSettings(**base)


def test_finetuning_raises_accuracy_on_a_learnable_task(tiny):
    task = colour_task()
    before = acc(tiny, task)
    tv = finetune(copy.deepcopy(tiny), {"colour": task}, settings("embed"))
    after = acc(tv.apply_to(copy.deepcopy(tiny)), task)
    assert tv.kind == "dense" and len(tv.sites) == 8 and tv.meta["tasks"] == ["colour"]
    assert after > before + 0.2


def test_lora_vector_has_rank_at_most_r_and_equals_scaled_ba(tiny):
    tv = finetune(copy.deepcopy(tiny), {"colour": colour_task()}, settings("lora"))
    assert tv.kind == "lora" and tv.scale == 2.0 and tv.rank == 2
    assert max(tv.ranks().values()) <= 2
    a, b = tv.lora[tv.sites[0]]
    assert torch.allclose(tv.to_dense().delta(tv.sites[0]), 2.0 * b @ a)
    assert b.abs().sum() > 0  # B started at zero and learned


def test_full_vector_carries_and_applies_non_site_parameters(tiny):
    task = colour_task()
    tv = finetune(copy.deepcopy(tiny), {"colour": task}, settings("full"))
    assert "visual.conv1.weight" in tv.extra and "visual.transformer.resblocks.0.mlp.c_fc.weight" in tv.extra
    assert not any(name.startswith("transformer.") for name in tv.extra)  # the text tower is not the tower tuned
    model = tv.apply_to(copy.deepcopy(tiny))
    assert not torch.equal(model.visual.conv1.weight, tiny.visual.conv1.weight)
    assert acc(model, task) > acc(tiny, task) + 0.2


def test_same_seed_same_images_for_any_trained_method():
    """The few-shot baseline and an aligner with one seed draw the same batches."""
    tasks = [colour_task(), colour_task(seed=3)]
    from orthoxfer.strategies.settings import AlignSettings

    ft, al = settings("embed", augment=4), AlignSettings(batch_size=32, augment=4, seed=0)
    for step in (0, 1, 7):
        t1, x1, y1 = task_batch(tasks, step, ft, torch.device("cpu"))
        t2, x2, y2 = task_batch(tasks, step, al, torch.device("cpu"))
        assert t1 is t2 and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_bad_settings_are_usage_errors():
    with pytest.raises(ValueError, match="choose one of embed, lora, full"):
        FinetuneSettings(kind="bitfit")
    with pytest.raises(ValueError, match="--lr must be >= 0"):
        FinetuneSettings(lr=-1)
