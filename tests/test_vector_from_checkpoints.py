"""`orthoxfer vector from-checkpoints`: every key layout fine-tuning code writes, and each refusal in one line."""

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_models_loading import hub_snapshot
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.models.loading import load_model
from orthoxfer.models.small import small_clip
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


class Marker:
    """Unpickling this object creates a file: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture
def pair(tiny_arch):
    """The base (`tiny:none`) and a copy fine-tuned on every parameter, image and text tower alike."""
    base = load_model(f"{tiny_arch}:none").model
    tuned = copy.deepcopy(base)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return base, tuned


def _visual(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("visual.")}


def _layouts(tuned: torch.nn.Module) -> dict[str, object]:
    """What fine-tuning code writes, by file name: whole CLIPs, image towers, wrapper prefixes, training checkpoints."""
    whole, tower = tuned.state_dict(), tuned.visual.state_dict()
    return {
        "whole.safetensors": whole,
        "whole.pt": whole,
        "tower.bin": tower,
        "visual-prefixed.safetensors": _visual(tuned),
        "ddp.pt": {f"module.{k}": v for k, v in whole.items()},
        "encoder.pt": {f"model.{k}": v for k, v in _visual(tuned).items()},  # task arithmetic's ImageEncoder keys
        "compiled-tower.pt": {f"_orig_mod.{k}": v for k, v in tower.items()},
        "training.pt": {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in whole.items()}},
    }


def _save(path: Path, obj: object) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)


def _vector(tiny_arch: str, finetuned: str, out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "vector",
            "from-checkpoints",
            "--base",
            f"{tiny_arch}:none",
            "--finetuned",
            finetuned,
            "--out",
            str(out),
            *extra,
        ],
    )


def test_every_layout_gives_the_vector_of_the_models(tmp_path, tiny_arch, pair):
    base, tuned = pair
    expected = TaskVector.from_models(base, tuned, "attn")
    for name, obj in _layouts(tuned).items():
        _save(tmp_path / name, obj)
        result = _vector(tiny_arch, str(tmp_path / name), tmp_path / f"{name}.tv.safetensors", "--task", "digits")
        assert result.exit_code == 0, (name, result.output)
        vector = TaskVector.load(tmp_path / f"{name}.tv.safetensors")
        assert vector.sites == expected.sites and not vector.extra, name
        for site in expected.sites:
            torch.testing.assert_close(vector.delta(site), expected.delta(site), rtol=0, atol=1e-7, msg=name)
        assert vector.meta["tasks"] == ["digits"] and vector.meta["base"] == f"{tiny_arch}:none"


def test_full_carries_the_other_image_tower_parameters_and_never_the_text_tower(tmp_path, tiny_arch, pair):
    base, tuned = pair
    _save(tmp_path / "whole.pt", tuned.state_dict())
    result = _vector(tiny_arch, str(tmp_path / "whole.pt"), tmp_path / "tv.safetensors", "--full")
    assert result.exit_code == 0, result.output
    vector = TaskVector.load(tmp_path / "tv.safetensors")
    assert "visual.conv1.weight" in vector.extra and all(k.startswith("visual.") for k in vector.extra)
    edited = vector.apply_to(copy.deepcopy(base))
    for name, value in _visual(tuned).items():
        torch.testing.assert_close(edited.state_dict()[name], value, rtol=0, atol=1e-6)
    assert torch.equal(edited.token_embedding.weight, base.token_embedding.weight)


def test_hf_hub_checkpoints_come_from_the_cache_and_offline_misses_name_what_to_fetch(
    tmp_path, tiny_arch, pair, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, tuned = pair
    snapshot = hub_snapshot(tmp_path / "hf", "owner/vectors")
    (snapshot / "MNIST").mkdir()
    torch.save(tuned.visual.state_dict(), snapshot / "MNIST" / "finetuned.pt")
    cache = ["--cache-dir", str(tmp_path / "hf")]
    result = _vector(tiny_arch, "hf-hub:owner/vectors/MNIST/finetuned.pt", tmp_path / "tv.safetensors", *cache)
    assert result.exit_code == 0, result.output
    expected = TaskVector.from_models(base, tuned, "attn")
    vector = TaskVector.load(tmp_path / "tv.safetensors")
    torch.testing.assert_close(vector.delta(expected.sites[0]), expected.delta(expected.sites[0]), rtol=0, atol=1e-7)

    missing = _vector(tiny_arch, "hf-hub:owner/vectors/SVHN/finetuned.pt", tmp_path / "svhn.safetensors", *cache)
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1
    assert f"hf download owner/vectors SVHN/finetuned.pt --cache-dir {tmp_path / 'hf'}" in missing.output


def test_refusals_are_one_line_and_nothing_is_unpickled(tmp_path, tiny_arch, pair):
    _, tuned = pair
    torch.save({"state_dict": tuned.state_dict(), "args": Marker(tmp_path / "unpickled")}, tmp_path / "pickled.pt")
    torch.save(copy.deepcopy(tuned.visual), tmp_path / "module.pt")  # a whole module, as task arithmetic saves it
    _save(tmp_path / "wide.safetensors", small_clip(seed=1, width=64, layers=1).state_dict())
    _save(tmp_path / "deeper.pt", small_clip(seed=1, layers=2).state_dict())
    _save(tmp_path / "text.pt", {k: v for k, v in tuned.state_dict().items() if not k.startswith("visual.")})
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    cases = [
        ("pickled.pt", 1, "holds a pickled Python object"),
        ("module.pt", 1, "re-save its state dict: python -c"),
        ("wide.safetensors", 1, "key 'visual.class_embedding' has shape (64,) in the checkpoint and (32,) in the base"),
        ("deeper.pt", 1, "key 'visual.transformer.resblocks.1.ln_1.weight' has shape (32,) in the checkpoint and none"),
        ("text.pt", 1, "key 'visual.class_embedding' has shape none in the checkpoint and (32,) in the base"),
        ("garbage.safetensors", 1, "could not read"),
        ("absent.pt", 2, "does not exist"),
    ]
    for name, code, message in cases:
        result = _vector(tiny_arch, str(tmp_path / name), tmp_path / "tv.safetensors")
        assert result.exit_code == code and message in result.output, (name, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "unpickled").exists() and not (tmp_path / "tv.safetensors").exists()


def test_mlp_sites_are_rectangular_and_carried_by_name(tmp_path, tiny_arch, pair):
    base, tuned = pair
    _save(tmp_path / "tuned.safetensors", tuned.state_dict())
    result = _vector(tiny_arch, str(tmp_path / "tuned.safetensors"), tmp_path / "tv.safetensors", "--sites", "attn,mlp")
    assert result.exit_code == 0, result.output
    vector = TaskVector.load(tmp_path / "tv.safetensors")
    fc, proj = "visual.transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.0.mlp.c_proj.weight"
    assert vector.shape(fc) == (128, 32) and vector.shape(proj) == (32, 128) and len(vector.sites) == 4 + 2
    torch.testing.assert_close(
        vector.delta(fc), (tuned.get_parameter(fc) - base.get_parameter(fc)).detach(), rtol=0, atol=1e-7
    )
