"""`orthoxfer apply`: the edited model written as open_clip weights, loading back to the same outputs."""

import open_clip
import torch
from typer.testing import CliRunner

from orthoxfer.artifacts import load_artifact
from orthoxfer.cli import app
from orthoxfer.models.loading import load_model
from orthoxfer.models.small import small_clip
from orthoxfer.models.state_dicts import KIND
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


def _vectors(tmp_path, model):
    g = torch.Generator().manual_seed(0)
    sites = find_sites(model, "attn")
    for name in ("a", "b"):
        TaskVector(
            {s.name: 0.05 * torch.randn(32, 32, generator=g) for s in sites},
            extra={"visual.conv1.weight": 0.01 * torch.randn(model.visual.conv1.weight.shape, generator=g)},
            meta={"tasks": [name]},
        ).save(tmp_path / f"{name}.safetensors")
    return [TaskVector.load(tmp_path / f"{name}.safetensors") for name in ("a", "b")]


def test_apply_round_trips_through_open_clip_create_model(tmp_path, tiny_arch):
    expected = load_model(f"{tiny_arch}:none").model
    a, b = _vectors(tmp_path, expected)
    a.apply_to(expected, 0.5)
    b.apply_to(expected, 2.0)
    args = [
        "apply",
        "--model",
        f"{tiny_arch}:none",
        "--task-vector",
        str(tmp_path / "a.safetensors"),
        "--scale",
        "0.5",
        "--task-vector",
        str(tmp_path / "b.safetensors"),
        "--scale",
        "2",
        "--out",
        str(tmp_path / "edited.safetensors"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"open_clip.create_model('{tiny_arch}', pretrained=" in result.output
    loaded = open_clip.create_model(tiny_arch, pretrained=str(tmp_path / "edited.safetensors"))
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.tokenize(["a photo of a cat", "a dog"], context_length=16)
    with torch.no_grad():
        assert torch.equal(loaded.eval().encode_image(images), expected.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), expected.encode_text(tokens))
    meta = load_artifact(tmp_path / "edited.safetensors", KIND)[1]
    assert meta["scales"] == [0.5, 2.0] and meta["open_clip_arch"] == tiny_arch
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_apply_refuses_a_vector_that_does_not_fit_before_writing(tmp_path, tiny_arch):
    wide = small_clip(width=64, layers=1)
    TaskVector.from_models(wide, small_clip(seed=1, width=64, layers=1), "attn").save(tmp_path / "wide.safetensors")
    out = tmp_path / "edited.safetensors"
    cases = [
        (["--task-vector", str(tmp_path / "wide.safetensors")], 1, "does not match model shape"),
        (["--task-vector", str(tmp_path / "wide.safetensors"), "--scale", "1", "--scale", "2"], 2, "give --scale once"),
    ]
    for extra, code, message in cases:
        result = runner.invoke(app, ["apply", "--model", f"{tiny_arch}:none", *extra, "--out", str(out)])
        assert result.exit_code == code and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
