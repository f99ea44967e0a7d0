"""A strategy written in a test file, with a setting of its own, runs through `align` and `bench` unchanged.

This is the promise of the strategy interface: one class (its options declared beside
it) and one registration; flags, TOML keys and recorded settings follow.
"""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer import Option, Strategy, register
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.cli import build_app
from orthoxfer.strategies.base import Solution
from orthoxfer.strategies.registry import unregister
from orthoxfer.strategies.settings import AlignSettings

runner = CliRunner()


class PlaneRotation(Strategy):
    """U rotates the first two coordinates by a fixed angle: closed form, exactly orthogonal, needs no data."""

    name = "toy"
    exact = True
    options = (Option("toy_angle", 0.0, "Angle (radians) U turns the first coordinate plane by.", minimum=-math.pi),)

    def solve(self, problem, groups, settings, run):
        stacks = []
        for group in groups:
            u = torch.eye(group.dim).expand(len(group.keys), group.dim, group.dim).clone()
            c, s = math.cos(settings.toy_angle), math.sin(settings.toy_angle)
            u[:, 0, 0], u[:, 0, 1], u[:, 1, 0], u[:, 1, 1] = c, -s, s, c
            stacks.append(u)
        return Solution(stacks)


@pytest.fixture
def toy():
    register(PlaneRotation)
    yield build_app()
    unregister("toy")


def test_the_toy_strategy_declares_a_flag_a_toml_key_and_a_setting(toy, tmp_path):
    assert "--toy-angle" in runner.invoke(toy, ["align", "--help"], env={"COLUMNS": "250"}).output
    assert "--toy-angle" in runner.invoke(toy, ["bench", "--help"], env={"COLUMNS": "250"}).output
    assert AlignSettings(method="toy", toy_angle=0.5).toy_angle == 0.5
    with pytest.raises(ValueError, match="--toy-angle must be >= "):
        AlignSettings(method="toy", toy_angle=-4.0)


def test_align_runs_the_toy_strategy_with_its_setting(toy, align_setup):
    tmp_path, common, _ = align_setup
    result = runner.invoke(toy, [*common, "--method", "toy", "--toy-angle", "0.3", "--out", str(tmp_path / "flag")])
    assert result.exit_code == 0, result.output
    alignment = Alignment.load(tmp_path / "flag" / "alignment.safetensors")
    u = next(iter(alignment.matrices().values()))
    assert u[0, 0] == pytest.approx(math.cos(0.3)) and u[1, 0] == pytest.approx(math.sin(0.3))
    assert alignment.meta["strategy"] == "toy" and alignment.meta["settings"]["toy_angle"] == 0.3
    assert "alpha" not in alignment.meta["settings"]  # another strategy's option is not recorded
    config = tmp_path / "toy.toml"
    config.write_text('[align]\nmethod = "toy"\ntoy_angle = 0.7\n')
    result = runner.invoke(toy, [*common, "--config", str(config), "--out", str(tmp_path / "toml")])
    assert result.exit_code == 0, result.output
    u = next(iter(Alignment.load(tmp_path / "toml" / "alignment.safetensors").matrices().values()))
    assert u[1, 0] == pytest.approx(math.sin(0.7))


def test_bench_runs_the_toy_strategy_as_a_row(toy, micro_run):  # noqa: F811
    root, _, _ = micro_run
    args = [
        "bench",
        "--config",
        str(root / "fast.toml"),
        "--suite",
        "mini",
        "--size",
        "micro",
        "--steps",
        "2",
        "--tasks",
        "mnist",
        "--kinds",
        "embed",
        "--methods",
        "toy",
        "--toy-angle",
        "0.2",
        "--no-procrustes-init",
        "--out",
        str(root / "toy"),
        "--cache-dir",
        str(root / "cache"),
        "--device",
        "cpu",
    ]
    result = runner.invoke(toy, args)
    assert result.exit_code == 0, result.output
    data = json.loads((root / "toy" / "results.json").read_text())
    row = next(e for e in data["summary"] if e["label"] == "embed, toy")
    assert 0.0 <= row["accuracy"]["mean"][0] <= 1.0
    assert json.loads((root / "toy" / "config.json").read_text())["align"]["toy_angle"] == 0.2
