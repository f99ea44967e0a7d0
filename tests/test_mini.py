"""The mini suite: bundled tasks, generated corpora, the prototype head and the cached model pair."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from orthoxfer.cache import cache_root
from orthoxfer.data import mini, mini_corpora, mini_pools
from orthoxfer.errors import UsageError
from orthoxfer.models import pretrain as pre
from orthoxfer.models.prototype_head import PrototypeHead
from orthoxfer.problem.tasks import FewShotTask

MICRO = pre.PretrainConfig.micro()


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tasks() -> list[mini.MiniTask]:
    return mini.mini_tasks("micro")


def test_micro_tasks_have_the_documented_shapes(tasks):
    assert [t.name for t in tasks] == list(mini.TASK_NAMES)
    assert {t.stands_for for t in tasks} == {"MNIST", "SVHN", "GTSRB", "DTD", "EuroSAT", "RESISC45", "SUN397", "Cars"}
    for t in tasks:
        for images, labels in ((t.train_images, t.train_labels), (t.test_images, t.test_labels)):
            assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
            assert labels.dtype == torch.int64 and len(labels) == len(images)
            assert set(labels.tolist()) == set(range(len(t.class_names)))  # every class in both splits


def test_tasks_are_deterministic():
    for name in mini.TASK_NAMES:
        first, second = mini.mini_task.__wrapped__(name, "micro"), mini.mini_task.__wrapped__(name, "micro")
        assert torch.equal(first.train_images, second.train_images) and torch.equal(
            first.test_images, second.test_images
        )
        assert torch.equal(first.train_labels, second.train_labels) and torch.equal(
            first.test_labels, second.test_labels
        )


def test_corpora_are_deterministic_and_disjoint_from_each_other_and_from_tasks(tasks):
    a, b = mini_corpora.corpus("a", 256, seed=0), mini_corpora.corpus("b", 256, seed=1)
    again = mini_corpora.corpus("a", 256, seed=0)
    assert torch.equal(a.images, again.images) and a.captions == again.captions
    assert a.images.shape == (256, 3, 32, 32) and len(a.captions) == 256
    assert not _hashes(a.images) & _hashes(b.images)
    assert not set(a.captions) & set(b.captions)
    assert not set(a.sources) & set(b.sources)
    task_images = set().union(*(_hashes(torch.cat([t.train_images, t.test_images])) for t in tasks))
    assert not task_images & (_hashes(a.images) | _hashes(b.images))
    task_sources = set().union(*(t.sources for t in tasks))
    assert not task_sources & (set(a.sources) | set(b.sources))


def test_unknown_names_are_one_line_usage_errors():
    with pytest.raises(UsageError, match="unknown mini task"):
        mini.mini_task("cifar")
    with pytest.raises(UsageError, match="unknown mini corpus"):
        mini_corpora.corpus("c", 4)  # type: ignore[arg-type]


def test_prototype_head_scores_by_centred_cosine_and_needs_every_class():
    feats = torch.tensor([[1.0, 0.1], [1.0, 0.2], [0.1, 1.0], [0.2, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    head = PrototypeHead.from_features(feats, labels, 2)
    assert head(feats).argmax(1).tolist() == [0, 0, 1, 1]
    assert not any(p.requires_grad for p in head.parameters())
    with pytest.raises(UsageError, match="classes \\[2\\]"):
        PrototypeHead.from_features(feats, labels, 3)


def test_model_suite_gives_stratified_train_only_pools_with_frozen_heads(tasks):
    model = pre.build_model(MICRO, "a")
    suite = mini_pools.model_suite(model, tasks, shots=24, seed=3)
    for task, ev in zip(tasks, suite, strict=True):
        pool = ev.fewshot
        assert isinstance(pool, FewShotTask) and len(pool.labels) == 24
        assert set(pool.labels.tolist()) == set(range(len(task.class_names)))
        assert _hashes(pool.images) <= _hashes(task.train_images)
        images, labels = pool.batch(torch.arange(4))
        logits = pool.head(model.encode_image(images))
        assert logits.shape == (4, len(task.class_names)) and labels.shape == (4,)
        assert torch.equal(ev.test_images, task.test_images)
    again = mini_pools.model_suite(model, tasks[:1], shots=24, seed=3)[0].fewshot
    assert torch.equal(again.images, suite[0].fewshot.images)
    with pytest.raises(UsageError, match="cannot cover"):
        mini_pools.model_suite(model, tasks[-1:], shots=5)


def test_head_and_validation_sets_are_fixed_and_apart_from_every_pool(tasks):
    """Heads never see a pool's labels, and lambda is chosen on images no pool holds, whatever the seed or shots."""
    model = pre.build_model(MICRO, "a")
    for task in tasks:
        head_idx, val_idx, rest = mini_pools.reserved(task)
        parts = [set(head_idx.tolist()), set(val_idx.tolist()), set(rest.tolist())]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == set(range(len(task.train_labels)))
        classes = len(task.class_names)
        for idx in (head_idx, val_idx):  # every class in each reserved part, equally often
            assert torch.bincount(task.train_labels[idx], minlength=classes).unique().numel() == 1
        ev = [mini_pools.model_suite(model, [task], shots=24, seed=s)[0] for s in (0, 1)]
        assert torch.equal(
            ev[0].fewshot.head.prototypes, ev[1].fewshot.head.prototypes
        )  # the head is the pool's own no more
        assert torch.equal(ev[0].val.images, task.train_images[val_idx]) and ev[0].val.head is ev[0].fewshot.head
        assert torch.equal(
            mini_pools.fewshot_pool(task, None, 0)[0], task.train_images[rest]
        )  # shots=None: the rest only
        alone = mini_pools.validation_set(
            model, task
        )  # what baseline direct chooses on: the suite's own validation set
        assert torch.equal(alone.images, ev[0].val.images) and torch.equal(alone.labels, ev[0].val.labels)
        assert torch.equal(alone.head.prototypes, ev[0].val.head.prototypes)


def test_bench_chooses_on_the_suite_s_validation_set_not_on_the_pool():
    from orthoxfer.experiments.bench import split_pools
    from orthoxfer.suites.base import SuiteInputs, SuiteTask

    task = mini.mini_tasks("micro", ["surfaces"])[0]
    ev = mini_pools.model_suite(pre.build_model(MICRO, "a"), [task], shots=24, seed=0)[0]
    with_val = SuiteInputs(
        "mini", "a", "b", None, None, [SuiteTask("surfaces", ev.fewshot, (None, list), val=ev.val)], {}
    )
    train, val = split_pools(with_val, 0.2, seed=0)
    assert train["surfaces"] is ev.fewshot and val["surfaces"] is ev.val  # the whole pool trains
    without = SuiteInputs("paper", "a", "b", None, None, [SuiteTask("surfaces", ev.fewshot, (None, list))], {})
    train, val = split_pools(without, 0.25, seed=0)
    assert len(train["surfaces"].labels) + len(val["surfaces"].labels) == 24 and len(val["surfaces"].labels) == 6


def test_pretraining_is_seeded_and_the_two_models_differ():
    first, log = pre.pretrain(MICRO, "a", progress=False)
    second, _ = pre.pretrain(MICRO, "a", progress=False)
    other, _ = pre.pretrain(MICRO, "b", progress=False)
    assert _states_equal(first, second)
    assert not _states_equal(first, other)
    assert not _states_equal(first, pre.build_model(MICRO, "a"))  # it trained
    assert log["seconds"] < 30


def test_pair_is_cached_by_a_key_of_its_settings(tmp_path, monkeypatch):
    calls: list[str] = []
    real = pre.pretrain

    def counting(config, which, **kwargs):
        calls.append(which)
        return real(config, which, **kwargs)

    monkeypatch.setattr(pre, "pretrain", counting)

    def pair(config):
        return tuple(pre.pretrained_model(w, config, tmp_path, progress=False, shipped=False) for w in ("a", "b"))

    a, b = pair(MICRO)
    assert calls == ["a", "b"]
    folder = tmp_path / "mini" / MICRO.key()
    assert {p.name for p in folder.iterdir()} == {"model_a.safetensors", "model_b.safetensors", "config.json"}
    logs = pre.pretrain_logs(MICRO, tmp_path)
    assert set(logs) == {"a", "b"} and all(log["which"] == w and log["seconds"] > 0 for w, log in logs.items())

    a2, b2 = pair(MICRO)  # same settings: loaded
    assert calls == ["a", "b"] and _states_equal(a, a2) and _states_equal(b, b2)

    changed = dataclasses.replace(MICRO, steps=MICRO.steps + 1)  # changed setting: rebuilt under a new key
    assert changed.key() != MICRO.key()
    pair(changed)
    assert calls == ["a", "b", "a", "b"]

    (folder / "model_b.safetensors").write_bytes(b"truncated")  # unreadable cache entry: rebuilt, A still loaded
    pair(MICRO)
    assert calls == ["a", "b", "a", "b", "b"]
    assert set(pre.pretrain_logs(MICRO, tmp_path)) == {"a", "b"}  # B's new log joined A's, not replaced it
    assert pre.pretrain_logs(dataclasses.replace(MICRO, steps=MICRO.steps + 2), tmp_path) == {}  # never built


def test_cache_dir_defaults_and_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("ORTHOXFER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "orthoxfer"
    monkeypatch.setenv("ORTHOXFER_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_root(tmp_path / "run") == tmp_path / "run"  # a run's --cache-dir wins over the environment
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root("~/run") == tmp_path / "run"


def test_bad_config_is_a_usage_error():
    with pytest.raises(UsageError, match="batch_size"):
        pre.PretrainConfig(batch_size=1)


def test_a_cached_source_vector_belongs_to_the_weights_it_was_fine_tuned_on(tmp_path, tasks):
    """Same config, other weights (a shipped A against a locally pre-trained one): not the same cached vector."""
    from orthoxfer.fit.finetune import FinetuneSettings
    from orthoxfer.suites.mini import defaults, mini_source_vector

    settings = FinetuneSettings(**defaults("micro")["finetune"])
    model = pre.pretrained_model("a", MICRO, tmp_path / "models", progress=False)
    head = mini_pools.model_suite(model, tasks[:1], shots=24)[0].fewshot.head
    mini_source_vector(model, tasks[0], head, settings, tmp_path)
    mini_source_vector(model, tasks[0], head, settings, tmp_path)  # the same weights: loaded, not fine-tuned again
    assert len(list((tmp_path / "mini-vectors").iterdir())) == 1
    with torch.no_grad():
        model.visual.proj.add_(1e-6)  # the same config, weights one rounding apart
    mini_source_vector(model, tasks[0], head, settings, tmp_path)
    assert len(list((tmp_path / "mini-vectors").iterdir())) == 2
    other_head = mini_pools.PrototypeHead(head.center, head.prototypes.flip(0), head.scale)  # same model, another head
    mini_source_vector(model, tasks[0], other_head, settings, tmp_path)
    assert len(list((tmp_path / "mini-vectors").iterdir())) == 3


@pytest.fixture
def source_training_images(monkeypatch):
    """The images each mini source vector is fine-tuned on, by task, as the suite hands them to fine-tuning."""
    import orthoxfer.suites.mini as mini_suite

    seen = {}
    finetune = mini_suite.finetune

    def spy(model, train, settings, **kwargs):
        (task,) = train.values()
        seen[task.name] = task.images
        return finetune(model, train, settings, **kwargs)

    monkeypatch.setattr(mini_suite, "finetune", spy)
    return seen


def test_no_validation_image_is_among_the_source_vectors_training_images(tmp_path, tasks, source_training_images):
    """Lambda, the step and the method are chosen on validation: the source vector must never have trained on it."""
    import orthoxfer.suites.mini as mini_suite
    from orthoxfer.fit.finetune import FinetuneSettings

    seen = source_training_images
    settings = FinetuneSettings(**mini_suite.defaults("micro")["finetune"])
    model = pre.pretrained_model("a", MICRO, tmp_path / "models", progress=False)
    for task in tasks[:2]:
        head = mini_pools.task_head(model, task)
        mini_suite.mini_source_vector(model, task, head, settings, tmp_path)
        val = mini_pools.reserved(task)[1]
        trained = _hashes(seen[task.name])
        assert not trained & _hashes(task.train_images[val])
        assert len(seen[task.name]) == len(task.train_labels) - len(val)


def test_disjoint_pools_come_from_a_region_the_source_vector_never_trains_on(tmp_path, tasks, source_training_images):
    """The overlap of pools and the vector's training data is the paper's; --disjoint-pools measures what it is worth."""
    import orthoxfer.suites.mini as mini_suite
    from orthoxfer.fit.finetune import FinetuneSettings
    from orthoxfer.suites.base import SuiteRequest

    seen = source_training_images
    request = SuiteRequest(size="micro", tasks=(tasks[0].name,), kinds=("embed",), shots=24, cache_dir=tmp_path)
    request.source_ft = FinetuneSettings(**mini_suite.defaults("micro")["finetune"])
    model = pre.pretrained_model("a", MICRO, tmp_path / "models", progress=False)
    task = tasks[0]
    region = mini_pools.pool_region(task, 24, disjoint=True)
    assert len(region) == 48 and set(region.tolist()) <= set(mini_pools.reserved(task)[2].tolist())
    pools = []
    for seed in (0, 1):
        request.seed, request.disjoint_pools = seed, True
        (suite_task,), vectors, _ = mini_suite.suite_inputs(request, model, model)
        pools.append(_hashes(suite_task.pool.images))
        assert pools[-1] <= _hashes(task.train_images[region])  # every seed draws inside the region ...
        assert not _hashes(seen[task.name]) & _hashes(task.train_images[region])  # ... which the vector never saw
    assert pools[0] != pools[1]
    request.seed, request.disjoint_pools = 0, False
    (overlapping,), again, _ = mini_suite.suite_inputs(request, model, model)
    assert _hashes(overlapping.pool.images) & _hashes(seen[task.name])  # the default: pools overlap its training data
    site = again["embed"][task.name].sites[0]
    assert not torch.equal(again["embed"][task.name].delta(site), vectors["embed"][task.name].delta(site))
    assert len(list((tmp_path / "mini-vectors").iterdir())) == 2
