"""`orthoxfer relate`: the two metrics, their incremental accumulation, and the command end to end."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_data_paper import make_eurosat
from torch import nn
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.evaluation.relate import RelationStats, compare, relate
from orthoxfer.models.loading import register_arch
from orthoxfer.models.small import small_clip, small_config

runner = CliRunner()


def images(n=8, seed=0):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_a_model_against_itself_is_perfectly_related(tiny):
    relations = relate(tiny, copy.deepcopy(tiny), images())
    assert [r.depth for r in relations] == [0, 1, 2] and relations[0].layer.startswith("embed")
    for r in relations:
        assert r.procrustes_residual == pytest.approx(0, abs=1e-5)
        assert r.cka == pytest.approx(1, abs=1e-9)
        assert r.rows == 8 * 17  # 16 patches + class token per image
        # the shuffled control is the floor: clearly worse than the real pairing
        assert r.control_residual > 0.3 and r.control_cka < 0.9


def test_metrics_are_blind_to_permuted_and_rotated_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=g) @ torch.randn(12, 12, generator=g) + 3.0  # correlated, off-centre
    permuted = x[:, torch.randperm(12, generator=g)]  # X P
    residual, cka = compare(x, permuted)
    assert residual == pytest.approx(0, abs=1e-6) and cka == pytest.approx(1, abs=1e-12)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    residual, cka = compare(x.double(), 2.5 * x.double() @ q + 1.0)  # rotation, scale and shift
    assert residual == pytest.approx(0, abs=1e-6) and cka == pytest.approx(1, abs=1e-12)
    residual, cka = compare(x, torch.randn(200, 12, generator=g))
    assert residual > 0.5 and cka < 0.3


def test_independent_random_models_are_less_related(tiny):
    relations = relate(tiny, small_clip(seed=1), images())
    for r in relations:
        assert r.procrustes_residual > 0.1 and r.cka < 0.95


def test_batches_add_up_to_one_batch(tiny_pair):
    source, target = tiny_pair
    batch = images(12)
    whole = relate(source, target, batch)
    parts = relate(source, target, iter(batch.split(4)))
    for a, b in zip(whole, parts):
        assert a.rows == b.rows == 12 * 17
        assert a.procrustes_residual == pytest.approx(b.procrustes_residual, abs=1e-9)
        assert a.cka == pytest.approx(b.cka, abs=1e-9)


def test_running_sums_match_explicit_centring():
    g = torch.Generator().manual_seed(2)
    x, y = (
        torch.randn(50, 6, generator=g, dtype=torch.float64) + 1,
        torch.randn(50, 5, generator=g, dtype=torch.float64),
    )
    stats = RelationStats()
    for i in range(0, 50, 7):
        stats.update(x[i : i + 7], y[i : i + 7])
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx, cyy, cxy = stats.centred()
    torch.testing.assert_close(cxx, xc.T @ xc)
    torch.testing.assert_close(cyy, yc.T @ yc)
    torch.testing.assert_close(cxy, xc.T @ yc)


class _Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)

    def forward(self, x):
        return self.ln_1(x)


class _Tower(nn.Module):
    """An image tower of ``depth`` blocks whose forward runs only the first ``runs`` of them."""

    def __init__(self, depth, runs):
        super().__init__()
        self.visual = nn.Module()
        self.visual.transformer = nn.Module()
        self.visual.transformer.resblocks = nn.ModuleList(_Block(3) for _ in range(depth))
        self.runs = runs

    def encode_image(self, images):
        x = images.flatten(2).mT
        for block in self.visual.transformer.resblocks[: self.runs]:
            x = block(x)
        return x.mean(1)


def test_a_tower_whose_forward_skips_a_block_is_refused_by_name():
    # the capture list started as None and kept a block's previous rows: a None or stale rows were read there
    assert [r.depth for r in relate(_Tower(2, 2), _Tower(2, 2), images())] == [0, 1, 2]
    with pytest.raises(OrthoxferError, match="target model's image forward did not pass through block 2"):
        relate(_Tower(2, 2), _Tower(2, 1), images())


def test_towers_of_different_width_are_refused(tiny):
    with pytest.raises(UsageError, match="width 32 and 2 block.s., the target's width 48"):
        relate(tiny, small_clip(seed=0, width=48), images())


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ["a/1.png", "a/2.png", "b/3.png", "4.png", "5.jpg"]:
        path = tmp_path / "imgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path / "imgs"


def test_cli_writes_json_plot_and_table(tmp_path, tiny_arch, folder):
    save_file(small_clip(seed=7, layers=1).state_dict(), str(tmp_path / "source.safetensors"))
    out = tmp_path / "run"
    args = [
        "relate",
        "--source",
        f"{tiny_arch}:{tmp_path / 'source.safetensors'}",
        "--target",
        f"{tiny_arch}:none",
        "--images",
        str(folder),
        "--batch-size",
        "2",
        "--limit",
        "4",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "block 1" in result.output and "CKA" in result.output and "relate.json" in result.output
    report = json.loads((out / "relate.json").read_text())
    assert report["image_count"] == 4 and [r["layer"] for r in report["layers"]] == ["embed (ln_pre)", "block 1"]
    assert all(0 <= r["cka"] <= 1 and r["rows"] == 4 * 17 for r in report["layers"])
    assert (out / "relate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["layers"] == report["layers"]


def dataset_args(arch: str, data) -> list[str]:
    """`relate` of a tiny model against itself on two images of a generated EuroSAT's test split."""
    model = f"{arch}:none"
    images = ["--images", f"eurosat:{data}", "--limit", "2"]
    return ["relate", "--source", model, "--target", model, *images, "--device", "cpu", "--workers", "0"]


def test_cli_reads_a_dataset_test_split(tmp_path, tiny_arch):
    make_eurosat(tmp_path / "data", per_class=10)  # 30 images, a tenth of them for test
    result = runner.invoke(app, [*dataset_args(tiny_arch, tmp_path / "data"), "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["image_count"] == 2 and all(r["cka"] == pytest.approx(1) for r in report["layers"])


def test_cli_usage_errors_exit_2_in_one_line(tmp_path, tiny_arch, folder):
    (tmp_path / "empty").mkdir()
    register_arch("orthoxfer-test-relate-wide", small_config(width=48, layers=1))
    cases = [
        (["--images", str(tmp_path / "empty")], "has no image files"),
        (["--images", str(tmp_path / "missing")], "neither a folder nor DATASET:DIR"),
        (["--images", str(folder), "--source", "orthoxfer-test-relate-wide:none"], "width 48 and 1 block(s)"),
    ]
    for extra, message in cases:
        base = {
            "--source": f"{tiny_arch}:none",
            "--target": f"{tiny_arch}:none",
            "--device": "cpu",
            "--workers": "0",
            "--out": str(tmp_path / "bad"),
        }
        base.update(dict(zip(extra[::2], extra[1::2])))
        result = runner.invoke(app, ["relate", *[v for kv in base.items() for v in kv]])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "bad").exists()


def test_the_transferability_check_measures_the_data_free_transfers_on_validation(tmp_path):
    """On ``same`` (the target is the source) transfusion's matching is the identity: it carries exactly what direct
    addition does; each gain is over target only at a lambda chosen on validation, 0 included, so never below 0."""
    from orthoxfer.cli import app

    args = ["relate", "--pair", "same", "--size", "micro", "--tasks", "mnist", "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "transferability mnist: target only" in result.output
    found = json.loads((tmp_path / "r" / "relate.json").read_text())["transferability"]["mnist"]
    assert found["direct"]["gain"] >= 0 and found["best_gain"] == max(
        found["direct"]["gain"], found["transfusion"]["gain"]
    )
    assert found["transfusion"]["gain"] == pytest.approx(found["direct"]["gain"])
    quiet = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "q"), "--device", "cpu", "--json"])
    assert quiet.exit_code == 0 and "transferability mnist" not in quiet.output


def test_the_transferability_check_runs_on_open_clip_models_with_a_held_out_part_of_the_pool(
    eurosat_run, tiny_arch, monkeypatch
):
    """Real checkpoints: the user's vector, the pool `align` would draw, validation held out of it. The target is
    the source here, so transfusion's matching is the identity and carries what direct addition carries."""
    tmp_path, _, _ = eurosat_run
    monkeypatch.setenv("ORTHOXFER_CACHE", str(tmp_path / "cache"))  # zero-shot heads
    args = [
        *dataset_args(tiny_arch, tmp_path / "data"),
        "--tasks",
        "eurosat",
        "--data-root",
        str(tmp_path / "data"),
        "--shots",
        "12",
        "--out",
        str(tmp_path / "r"),
    ]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "--task-vector EuroSAT=" in missing.output
    result = runner.invoke(app, [*args, "--task-vector", f"eurosat={tmp_path / 'tv.safetensors'}"])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "r" / "relate.json").read_text())["transferability"]["EuroSAT"]
    assert found["direct"]["gain"] >= 0 and found["transfusion"]["gain"] == pytest.approx(found["direct"]["gain"])
    assert "transferability EuroSAT: target only" in result.output and "+8.4 points" in result.output
