"""Starting an alignment from a transfer (a composition), and `align --init transfusion --anchor --select-every` on mini."""

import json

import pytest
import torch
from planted import planted
from typer.testing import CliRunner

from orthoxfer.alignment.align import align
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.alignment.start import start_from
from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.transfers.registry import transfer_settings
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


def test_init_names_a_start_or_a_transfer():
    assert AlignSettings(init="transfusion").init == "transfusion"
    with pytest.raises(UsageError, match="unknown init 'sgd'; choose one of identity, procrustes or a transfer: "):
        AlignSettings(init="sgd")


def test_identity_and_procrustes_starts_leave_the_vectors_alone():
    _, target, _, tv, task = planted()
    for init in ("identity", "procrustes"):
        assert start_from(init, {"toy": tv}, None, target, {"toy": task}, transfer_settings({}))["toy"] is tv


def test_an_alignment_refuses_vectors_its_transfer_did_not_carry():
    source, target, _, tv, task = planted()
    settings = AlignSettings(method="cayley", init="orthogonal-shift", sites="linear", steps=1)
    with pytest.raises(UsageError, match="was not carried by orthogonal-shift; carry the vectors with"):
        align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings)


def test_a_frozen_start_from_a_transfer_is_the_carried_vector():
    """anchor = inf at init=<transfer>: U = I, so the alignment carries exactly what the transfer carried."""
    source, target, _, tv, task = planted()
    carried = start_from("orthogonal-shift", {"toy": tv}, source, target, {"toy": task}, transfer_settings({}))
    assert carried["toy"].meta["carried"]["method"] == "orthogonal-shift"
    settings = AlignSettings(method="riemannian", init="orthogonal-shift", sites="linear", anchor=float("inf"))
    al = align(AlignProblem(target, carried, {"toy": task}, source), settings)
    assert al.meta["start"]["init"] == "orthogonal-shift" and "toy" in al.meta["start"]["diagnostics"]
    moved = al.apply(carried["toy"])
    assert all(torch.equal(moved.delta(s), carried["toy"].delta(s)) for s in tv.sites)
    assert not all(torch.equal(moved.delta(s), tv.delta(s)) for s in tv.sites)  # the transfer did change it


def test_align_starts_from_transfusion_anchored_and_chooses_its_step_on_mini(tmp_path):
    out = tmp_path / "run"
    args = [
        "align",
        *("--suite", "mini", "--size", "micro", "--cache-dir", str(tmp_path / "cache")),
        *("--target", "mini:b", "--source", "mini:a", "--task-vector", "mini:surfaces"),
        *("--method", "cayley", "--init", "transfusion", "--anchor", "10", "--select-every", "2"),
        *("--steps", "3", "--device", "cpu", "--out", str(out)),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    al = Alignment.load(out / "alignment.safetensors")
    assert al.meta["start"]["init"] == "transfusion" and "transfusion_rounds" in al.meta["start"]["options"]
    assert al.meta["settings"]["anchor"] == 10.0 and al.meta["settings"]["select_every"] == 2
    selection = al.meta["selection"]["joint"]
    assert [step for step, _, _ in selection["curve"]] == [0, 2, 3]
    assert selection["chosen_step"] in (0, 2, 3) and 0.0 <= selection["chosen_score"] <= 1.0
    validated = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in validated] == [0, 2, 3]
    transferred = TaskVector.load(out / "transferred.safetensors")
    assert transferred.meta["carried"]["method"] == "transfusion"  # the alignment rotated what transfusion carried
    config = json.loads((out / "config.json").read_text())
    assert config["init"] == "transfusion" and config["anchor"] == 10.0 and config["select_every"] == 2

    no_source = [a for a in args if a not in ("--source", "mini:a")][:-1] + [str(tmp_path / "no-source")]
    missing = runner.invoke(app, no_source)
    assert missing.exit_code == 2 and "transfusion needs the source model" in missing.output
