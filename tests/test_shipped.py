"""Shipped mini models: `mini pretrain` writes them, the suite loads them where the recipe hash matches, else pre-trains
and says so; pre-training resumes from its checkpoint to the uninterrupted run's weights."""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.models import pretrain, shipped
from orthoxfer.models.pretrain import PretrainConfig, pretrained_model
from orthoxfer.models.shipped import read_shipped, write_shipped

runner = CliRunner()
MICRO = PretrainConfig.micro()


@pytest.fixture(scope="module")
def shipped_micro(tmp_path_factory):
    """The four micro models written by the CLI, and the cache that made them."""
    root = tmp_path_factory.mktemp("ship")
    result = runner.invoke(
        app, ["mini", "pretrain", "--size", "micro", "--out", str(root / "weights"), "--cache-dir", str(root / "cache")]
    )
    assert result.exit_code == 0, result.output
    return root


def _visual(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"visual.{k}": v for k, v in model.visual.state_dict().items()}


def test_mini_pretrain_writes_each_models_image_tower_with_the_recipe_hash(shipped_micro):
    for which in ("a", "b", "seed", "release"):
        cached = pretrained_model(which, MICRO, shipped_micro / "cache", progress=False, shipped=False)
        tensors, why = read_shipped(which, MICRO.width, MICRO.recipe_hash(), shipped_micro / "weights")
        assert why is None and tensors.keys() == _visual(cached).keys()
        assert all(torch.equal(tensors[k], v) for k, v in _visual(cached).items())  # same path: bit for bit
    assert read_shipped("a", MICRO.width, "another recipe", shipped_micro / "weights")[0] is None


def test_the_suite_loads_shipped_weights_without_pre_training(shipped_micro, tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "SHIPPED", shipped_micro / "weights")

    def refuse(*args, **kwargs):
        raise AssertionError("pre-trained although a shipped model matches")

    monkeypatch.setattr(pretrain, "pretrain", refuse)
    for which in ("a", "b", "seed", "release"):
        model = pretrained_model(which, MICRO, tmp_path / "empty-cache", progress=False)
        expected = read_shipped(which, MICRO.width, MICRO.recipe_hash())[0]
        assert all(torch.equal(v, expected[k]) for k, v in _visual(model).items())
    assert not (tmp_path / "empty-cache").exists()


def test_a_mismatched_recipe_falls_back_to_pre_training_and_says_so(tmp_path, monkeypatch, capsys):
    other = dataclasses.replace(MICRO, lr=2e-3)
    write_shipped(
        "a",
        other.width,
        pretrained_model("a", other, tmp_path / "c0", progress=False),
        other.recipe_hash(),
        {},
        tmp_path / "w",
    )
    monkeypatch.setattr(shipped, "SHIPPED", tmp_path / "w")
    capsys.readouterr()
    model = pretrained_model("a", MICRO, tmp_path / "c1")
    said = " ".join(capsys.readouterr().err.split())  # rich wraps lines at the terminal width
    assert "no shipped weights" in said and f"is for recipe {other.recipe_hash()}, not {MICRO.recipe_hash()}" in said
    reference = pretrained_model("a", MICRO, tmp_path / "c2", progress=False, shipped=False)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_an_interrupted_pre_training_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    config = dataclasses.replace(MICRO, steps=5)
    whole, _ = pretrain.pretrain(config, "a", progress=False)
    real_loss, calls = pretrain._contrastive_loss, []

    def dies_at_step_four(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(*args)

    checkpoint = tmp_path / "a.partial.safetensors"
    monkeypatch.setattr(pretrain, "_contrastive_loss", dies_at_step_four)
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain(config, "a", progress=False, checkpoint=checkpoint, checkpoint_every=2)
    monkeypatch.setattr(pretrain, "_contrastive_loss", real_loss)
    resumed, log = pretrain.pretrain(config, "a", progress=False, checkpoint=checkpoint, checkpoint_every=2)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
    other = dataclasses.replace(config, lr=2e-3)  # another pre-training's checkpoint is not resumed
    fresh, _ = pretrain.pretrain(other, "a", progress=False, checkpoint=checkpoint)
    reference, _ = pretrain.pretrain(other, "a", progress=False)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in reference.state_dict().items())


def test_unknown_model_or_size_is_one_line(tmp_path):
    for args, message in ((["--models", "a,c"], "unknown mini model 'c'"), (["--size", "huge"], "unknown size 'huge'")):
        result = runner.invoke(app, ["mini", "pretrain", *args, "--out", str(tmp_path), "--cache-dir", str(tmp_path)])
        assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.iterdir())


def test_the_shipped_width_128_models_keep_their_recipe_hash():
    full = PretrainConfig()
    assert (full.width, full.head_width) == (128, 32)
    assert full.recipe_hash() == "3a50a8eac9bad5e73b49"  # the hash the four models were shipped under
    assert MICRO.recipe_hash() == "be16ed090899a8e46fa6"  # head_width enters a hash only off its old rule
    for which in ("a", "b", "seed", "release"):
        assert read_shipped(which, full.width, full.recipe_hash())[1] is None
    wider = dataclasses.replace(full, width=256)
    assert wider.recipe_hash() != full.recipe_hash() and wider.key() != full.key()
    assert read_shipped("a", 256, wider.recipe_hash())[1] == "no shipped file model_a_w256.safetensors"


def test_mini_pretrain_width_is_a_recipe_of_its_own_with_files_of_its_own(shipped_micro, tmp_path):
    narrow = dataclasses.replace(MICRO, width=16)  # heads of micro's width 8: two of them, not four
    args = ["mini", "pretrain", "--size", "micro", "--models", "a", "--cache-dir", str(shipped_micro / "cache")]
    result = runner.invoke(app, [*args, "--width", "16", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["model_a_w16.safetensors"]
    tensors, why = read_shipped("a", 16, narrow.recipe_hash(), tmp_path)
    assert why is None and narrow.recipe_hash() != MICRO.recipe_hash()
    model = pretrained_model("a", narrow, shipped_micro / "cache", progress=False, shipped=False)
    assert model.visual.transformer.width == 16 and model.visual.transformer.resblocks[0].attn.num_heads == 2
    assert all(torch.equal(tensors[k], v) for k, v in _visual(model).items())
    assert (shipped_micro / "cache" / "mini" / narrow.key()).is_dir() and narrow.key() != MICRO.key()
    for width, message in (("20", "width 20 must be a positive multiple of the head width 8"), ("0", "width 0")):
        refused = runner.invoke(app, [*args, "--width", width, "--out", str(tmp_path / "no")])
        assert refused.exit_code == 2 and message in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "no").exists()
