"""`orthoxfer transfer`: a transfer method from the CLI writes what the Python API computes, and what it learnt."""

import json

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer.artifacts import load_artifact
from orthoxfer.cli import app
from orthoxfer.suites import open_suite
from orthoxfer.suites.base import SuiteRequest
from orthoxfer.transfers.carry import LEARNT, carry
from orthoxfer.transfers.registry import transfer_settings
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    return root, ["--suite", "mini", "--size", "micro", "--cache-dir", str(root / "cache"), "--device", "cpu"]


def test_gradfix_from_the_cli_equals_the_python_api_and_saves_its_mask(mini):
    root, flags = mini
    args = [
        "transfer",
        *flags,
        "--method",
        "gradfix",
        "--target",
        "mini:b",
        "--task-vector",
        "mini:surfaces",
        "--gradfix-shots",
        "1",
        "--out",
        str(root / "gradfix"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = root / "gradfix"
    saved = TaskVector.load(run / "transferred.safetensors")
    assert saved.meta["method"] == "gradfix" and saved.meta["recommended_scale"] == 1.0

    suite = open_suite("mini", SuiteRequest(size="micro", cache_dir=root / "cache"))
    target = suite.load("mini:b")
    pools = suite.fewshot_tasks(target, ["surfaces"], suite.default_shots, None, 0)
    done = carry(
        "gradfix",
        {"surfaces": suite.vector("mini:surfaces")},
        None,
        target.model,
        pools,
        transfer_settings({"gradfix_shots": 1}),
    )
    expected = done["surfaces"].vector
    assert saved.sites == expected.sites and all(torch.equal(saved.dense[s], expected.dense[s]) for s in expected.sites)

    learnt, meta = load_artifact(run / "learnt.safetensors", LEARNT)
    assert meta["method"] == "gradfix" and learnt.keys() == {f"surfaces/{k}" for k in done["surfaces"].learnt}
    kept = sum(int(t.sum()) for t in learnt.values()) / sum(t.numel() for t in learnt.values())
    diagnostics = json.loads((run / "diagnostics.json").read_text())
    assert diagnostics["surfaces"]["kept_fraction"] == pytest.approx(kept) and 0 < kept < 1
    assert json.loads((run / "config.json").read_text())["transfer"]["gradfix_shots"] == 1
    assert "evaluate: orthoxfer eval --suite mini --size micro" in result.output


def test_transfusion_needs_no_pool_and_records_its_permutations(mini):
    root, flags = mini
    args = [
        "transfer",
        *flags,
        "--method",
        "transfusion",
        "--source",
        "mini:a",
        "--target",
        "mini:b",
        "--task-vector",
        "mini:surfaces",
        "--out",
        str(root / "transfusion"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    learnt, _ = load_artifact(root / "transfusion" / "learnt.safetensors", LEARNT)
    assert "surfaces/perm/residual" in learnt
    residual = learnt["surfaces/perm/residual"]
    assert torch.equal(residual.sort().values, torch.arange(len(residual)))  # a permutation


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "penalty"], "penalty is an alignment strategy: use `orthoxfer align --method penalty`"),
        (["--method", "rebasin"], "unknown method 'rebasin'"),
        (["--method", "transfusion"], "transfusion needs the source model: pass --source"),
        (["--method", "gradfix", "--mode", "both"], "unknown mode 'both'"),
        (["--method", "orthogonal-shift", "--shots", "8"], "orthogonal-shift reads no data: drop --shots"),
        (["--method", "gradfix", "--tasks", "relief"], "--tasks names relief, which no --task-vector carries"),
    ],
)
def test_bad_input_is_one_line(mini, extra, message):
    root, flags = mini
    args = [
        "transfer",
        *flags,
        "--target",
        "mini:b",
        "--task-vector",
        "mini:surfaces",
        "--out",
        str(root / "bad"),
        *extra,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_tasks_choose_the_vectors_carried_per_task(mini):
    root, flags = mini
    args = [
        "transfer",
        *flags,
        "--method",
        "transfusion",
        "--source",
        "mini:a",
        "--target",
        "mini:b",
        "--task-vector",
        "mini:surfaces",
        "--task-vector",
        "mini:relief",
        "--tasks",
        "relief",
        "--out",
        str(root / "one"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert set(json.loads((root / "one" / "diagnostics.json").read_text())) == {"relief"}
    learnt, _ = load_artifact(root / "one" / "learnt.safetensors", LEARNT)
    assert learnt and all(k.startswith("relief/") for k in learnt)


def test_joint_mode_carries_the_summed_vectors_once_with_every_pool(mini):
    root, flags = mini
    args = [
        "transfer",
        *flags,
        "--method",
        "gradfix",
        "--mode",
        "joint",
        "--target",
        "mini:b",
        "--task-vector",
        "mini:surfaces",
        "--task-vector",
        "mini:relief",
        "--gradfix-shots",
        "1",
        "--out",
        str(root / "joint"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    learnt, _ = load_artifact(root / "joint" / "learnt.safetensors", LEARNT)
    assert learnt and all(k.startswith("joint/") for k in learnt)
    assert set(json.loads((root / "joint" / "diagnostics.json").read_text())) == {"joint"}
