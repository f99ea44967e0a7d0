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
        tensors, why = read_shipped(which, MICRO.recipe_hash(), shipped_micro / "weights")
        assert why is None and tensors.keys() == _visual(cached).keys()
        assert all(torch.equal(tensors[k], v) for k, v in _visual(cached).items())  # same path: bit for bit
    assert read_shipped("a", "another recipe", shipped_micro / "weights")[0] is None


def test_the_suite_loads_shipped_weights_without_pre_training(shipped_micro, tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "SHIPPED", shipped_micro / "weights")

    def refuse(*args, **kwargs):
        raise AssertionError("pre-trained although a shipped model matches")

    monkeypatch.setattr(pretrain, "pretrain", refuse)
    for which in ("a", "b", "seed", "release"):
        model = pretrained_model(which, MICRO, tmp_path / "empty-cache", progress=False)
        expected = read_shipped(which, MICRO.recipe_hash())[0]
        assert all(torch.equal(v, expected[k]) for k, v in _visual(model).items())
    assert not (tmp_path / "empty-cache").exists()


def test_a_mismatched_recipe_falls_back_to_pre_training_and_says_so(tmp_path, monkeypatch, capsys):
    other = dataclasses.replace(MICRO, lr=2e-3)
    write_shipped(
        "a", pretrained_model("a", other, tmp_path / "c0", progress=False), other.recipe_hash(), {}, tmp_path / "w"
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
