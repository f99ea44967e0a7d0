"""Accuracy per task, the unweighted mean, skipped images, and the ``eval`` command end to end."""

import json

import pytest
import torch
import typer
from test_data_paper import make_eurosat
from test_modes import ModeSpy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from orthoxfer.artifacts import load_artifact
from orthoxfer.cli.evaluate import eval_command
from orthoxfer.data.paper import CORRUPT
from orthoxfer.evaluation.accuracy import accuracy, evaluate, evaluate_scores
from orthoxfer.models.heads import KIND, ZeroShotHead
from orthoxfer.models.loading import load_model
from orthoxfer.models.small import small_clip
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


class MeanColour(nn.Module):
    """Features = mean colour per channel: the brightest channel is the predicted class under an identity head."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        return images.mean(dim=(2, 3))


def _loader(labels: list[int], truth: list[int]) -> DataLoader:
    images = torch.zeros(len(labels), 3, 4, 4)
    for i, c in enumerate(truth):
        images[i, c] = 1.0  # image i looks like class truth[i]
    return DataLoader(TensorDataset(images, torch.tensor(labels)), batch_size=3)


def test_accuracy_counts_correct_predictions_and_skips_unreadable():
    head = ZeroShotHead(torch.eye(3), 100.0)
    loader = _loader([0, 1, 2, 2, CORRUPT], truth=[0, 1, 2, 0, 1])  # 3 of 4 readable right
    assert accuracy(MeanColour(), head, loader) == pytest.approx(0.75)
    scores = evaluate_scores(MeanColour(), {"t": (head, loader)}, progress=False)
    assert (scores["t"].correct, scores["t"].total, scores["t"].skipped) == (3, 4, 1)


def test_evaluate_gives_each_task_and_the_unweighted_mean():
    model = MeanColour().train()
    head = ModeSpy(ZeroShotHead(torch.eye(3), 100.0)).train()
    results = evaluate(
        model,
        {
            "half": (head, _loader([0, 1], truth=[0, 0])),
            "all": (head, _loader([0, 1, 2, 0, 1, 2], truth=[0, 1, 2] * 2)),
        },
        progress=False,
    )
    assert results == {"half": 0.5, "all": 1.0, "mean": 0.75}  # unweighted: not 7/8
    assert head.modes and not any(head.modes)  # scored in eval mode
    assert model.training and head.training  # left in the mode they came in


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # a second command keeps "eval" a subcommand
    return app


def test_eval_command_writes_results_and_caches_heads(tmp_path, tiny_arch):
    make_eurosat(tmp_path / "data", per_class=10)
    common = [
        "eval",
        "--model",
        f"{tiny_arch}:none",
        "--data-root",
        str(tmp_path / "data"),
        "--tasks",
        "eurosat",
        "--heads-dir",
        str(tmp_path / "heads"),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    result = runner.invoke(_cli(), [*common, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    accuracy = results["accuracy"]["EuroSAT"]
    assert 0.0 <= accuracy <= 1.0 and results["accuracy"]["mean"] == accuracy
    assert results["counts"]["EuroSAT"] == {"correct": round(3 * accuracy), "total": 3, "skipped_unreadable": 0}
    assert results["model"] == f"{tiny_arch}:none" and results["task_vector"] is None and not results["quick_gelu"]
    (head_file,) = (tmp_path / "heads").iterdir()
    assert load_artifact(head_file, KIND)[1]["model"] == load_model(f"{tiny_arch}:none").identity

    # a task vector at scale 0 changes nothing; the head cache is reused, not grown
    base, tuned = small_clip(width=32, layers=1, embed_dim=16), small_clip(seed=1, width=32, layers=1, embed_dim=16)
    TaskVector.from_models(base, tuned, "attn").save(tmp_path / "tv.safetensors")
    tv = ["--task-vector", str(tmp_path / "tv.safetensors")]
    result = runner.invoke(_cli(), [*common, *tv, "--scale", "0", "--out", str(tmp_path / "run0"), "--no-progress"])
    assert result.exit_code == 0, result.output
    zero = json.loads((tmp_path / "run0" / "results.json").read_text())
    assert zero["accuracy"] == results["accuracy"] and zero["scale"] == 0.0
    assert zero["task_vector"].endswith("tv.safetensors")
    assert len(list((tmp_path / "heads").iterdir())) == 1


def test_eval_command_errors_are_one_line(tmp_path, tiny_arch):
    make_eurosat(tmp_path / "data", per_class=10)
    wide = small_clip(width=64, layers=1)
    TaskVector.from_models(wide, small_clip(seed=1, width=64, layers=1), "attn").save(tmp_path / "wide.safetensors")
    args = [
        "eval",
        "--model",
        f"{tiny_arch}:none",
        "--data-root",
        str(tmp_path / "data"),
        "--workers",
        "0",
        "--heads-dir",
        str(tmp_path / "heads"),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    cases = [
        (["--tasks", "EuroSAT,ImageNet"], 2, "unknown dataset 'ImageNet'"),
        (["--tasks", "EuroSAT,MNIST"], 1, f"MNIST: {tmp_path / 'data' / 'MNIST' / 'raw' / 't10k-images-idx3-ubyte'}"),
        (["--tasks", "EuroSAT", "--task-vector", str(tmp_path / "wide.safetensors")], 1, "does not match model shape"),
        (["--tasks", "EuroSAT", "--model", "ViT-B-32:nope"], 2, "has no pretrained tag 'nope'"),
    ]
    for extra, code, message in cases:
        result = runner.invoke(_cli(), [*args, *extra])
        assert result.exit_code == code and message in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "results.json").exists()


def test_heads_follow_cache_dir_in_eval_and_the_paper_bench(tmp_path, tiny_arch, monkeypatch):
    from orthoxfer.fit.finetune import FinetuneSettings
    from orthoxfer.suites import build_suite
    from orthoxfer.suites.base import SuiteRequest

    monkeypatch.setenv("ORTHOXFER_CACHE", str(tmp_path / "default"))
    make_eurosat(tmp_path / "data", per_class=10)
    args = [
        "eval",
        "--model",
        f"{tiny_arch}:none",
        "--data-root",
        str(tmp_path / "data"),
        "--tasks",
        "eurosat",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    ]
    result = runner.invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache" / "heads").iterdir())) == 1

    (tmp_path / "vectors").mkdir()
    target = load_model(f"{tiny_arch}:none").model
    TaskVector.from_models(target, small_clip(seed=1, width=32, layers=1, embed_dim=16), "attn").save(
        tmp_path / "vectors" / "EuroSAT-embed.safetensors"
    )
    request = SuiteRequest(
        shots=6,
        tasks=("EuroSAT",),
        kinds=("embed",),
        source_ft=FinetuneSettings(),
        cache_dir=tmp_path / "bench-cache",
        source=f"{tiny_arch}:none",
        target=f"{tiny_arch}:none",
        data_root=tmp_path / "data",
        vectors_dir=tmp_path / "vectors",
    )
    build_suite("paper", request)
    assert len(list((tmp_path / "bench-cache" / "heads").iterdir())) == 1
    assert not (tmp_path / "default").exists()  # nothing went to the default cache
