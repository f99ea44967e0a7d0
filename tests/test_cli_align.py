"""`orthoxfer align` and `orthoxfer diagnose` end to end on a tiny model and a generated dataset tree."""

import json

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer.alignment.artifact import Alignment
from orthoxfer.cli import app
from orthoxfer.vectors.taskvector import TaskVector

runner = CliRunner()


def test_align_writes_a_complete_run_folder(align_setup):
    tmp_path, common, tv = align_setup
    out = tmp_path / "run"
    result = runner.invoke(app, [*common, "--method", "penalty", "--alpha", "1.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in (
        "alignment.safetensors",
        "transferred.safetensors",
        "metrics.jsonl",
        "diagnostics.json",
        "config.json",
        "singular_values.png",
        "orthogonality.png",
    ):
        assert (out / name).is_file(), name
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [3] and "orth_error" in logged[0]  # every 10th step and the last
    al = Alignment.load(out / "alignment.safetensors")
    assert (
        al.meta["strategy"] == "penalty"
        and al.meta["settings"]["alpha"] == 1.0
        and "retraction" not in al.meta["settings"]
    )
    moved = TaskVector.load(out / "transferred.safetensors")
    assert moved.sites == tv.sites and moved.meta["recommended_scale"] == 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "penalty" and config["steps"] == 3

    again = runner.invoke(app, [*common, "--method", "penalty", "--out", str(out)])
    assert again.exit_code == 2 and "already holds a run" in again.output
    resumed = runner.invoke(app, [*common, "--method", "penalty", "--alpha", "1.0", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output

    diag = runner.invoke(
        app,
        [
            "diagnose",
            "--task-vector",
            str(tmp_path / "tv.safetensors"),
            "--alignment",
            str(out / "alignment.safetensors"),
            "--oracle",
            str(tmp_path / "tv.safetensors"),
            "--json",
        ],
    )
    assert diag.exit_code == 0, diag.output
    report = json.loads(diag.output)
    assert len(report["sites"]) == 4 and report["aggregate"]["cosine_oracle_before"] == pytest.approx(1.0)


def test_align_procrustes_with_source_and_per_task(align_setup, tiny_arch):
    tmp_path, common, tv = align_setup
    out = tmp_path / "proc"
    source = ["--source", f"{tiny_arch}:{tmp_path / 'source.safetensors'}"]
    result = runner.invoke(app, [*common, *source, "--method", "procrustes", "--mode", "per-task", "--out", str(out)])
    assert result.exit_code == 0, result.output
    al = Alignment.load(out / "alignment.safetensors")
    assert al.scopes == ["EuroSAT"] and al.meta["diagnostics"]["EuroSAT"]["orth_error_max"] < 1e-4
    assert (out / "EuroSAT" / "diagnostics.json").is_file()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "sgd"], "choose one of penalty, riemannian, cayley, procrustes"),
        (["--method", "procrustes"], "procrustes needs --source"),
        (["--lr", "-1"], "--lr must be >= 0"),
        (["--sites", "mlp"], "selects none of the task vector's sites"),
        (["--tasks", "imagenet"], "unknown dataset 'imagenet'"),
    ],
)
def test_align_usage_errors_exit_2_in_one_line(align_setup, extra, message):
    tmp_path, common, tv = align_setup
    result = runner.invoke(app, [*common, *extra, "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_config_file_is_data_and_flags_override_it(align_setup):
    tmp_path, common, tv = align_setup
    cfg = tmp_path / "align.toml"
    cfg.write_text('[align]\nmethod = "cayley"\nlr = 0.01\nsteps = 2\n')
    result = runner.invoke(app, [*common, "--config", str(cfg), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["method"] == "cayley" and config["lr"] == 0.01 and config["steps"] == 3  # --steps 3 wins
    cfg.write_text('[align]\nmethd = "cayley"\n')
    bad = runner.invoke(app, [*common, "--config", str(cfg), "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "unknown key 'methd'" in bad.output
    cfg.write_text('[align]\nsteps = "many"\n')
    bad = runner.invoke(app, [*common, "--config", str(cfg), "--out", str(tmp_path / "e")])
    assert bad.exit_code == 2 and "'steps' must be int" in bad.output


def test_finetune_command_makes_a_task_vector_that_align_accepts(align_setup, tiny_arch, compiled):
    tmp_path, common, tv = align_setup
    out = tmp_path / "ft"
    result = runner.invoke(
        app,
        [
            "finetune",
            "--model",
            f"{tiny_arch}:{tmp_path / 'source.safetensors'}",
            "--task",
            "eurosat",
            "--data-root",
            str(tmp_path / "data"),
            "--kind",
            "lora",
            "--rank",
            "2",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--batch-size",
            "4",
            "--lr",
            "1e-3",
            "--heads-dir",
            str(tmp_path / "heads"),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--val-fraction",
            "0.25",
            "--compile",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["compile"] is True and len(compiled) == 1 and compiled[0] > 0
    made = TaskVector.load(out / "task_vector.safetensors")
    assert (
        made.kind == "lora"
        and made.rank == 2
        and made.meta["tasks"] == ["EuroSAT"]
        and (out / "metrics.jsonl").exists()
    )
    validation = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert validation[-1]["step"] == 3 and set(validation[-1]["accuracy"]) == {"EuroSAT", "mean"}
    assert "best" in result.output and "validation accuracy" not in result.output  # per epoch: --verbose only
    aligned = runner.invoke(
        app,
        [
            *common[:3],
            "--task-vector",
            str(out / "task_vector.safetensors"),
            *common[5:],
            "--method",
            "cayley",
            "--out",
            str(tmp_path / "al"),
        ],
    )
    assert aligned.exit_code == 0, aligned.output
    assert TaskVector.load(tmp_path / "al" / "transferred.safetensors").kind == "lora"


def test_align_control_aligns_a_norm_matched_control(align_setup):
    tmp_path, common, tv = align_setup
    out = tmp_path / "ctl"
    result = runner.invoke(app, [*common, "--method", "cayley", "--control", "norm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    al = Alignment.load(out / "alignment.safetensors")
    assert al.meta["control"] == "norm" and json.loads((out / "config.json").read_text())["control"] == "norm"
    moved = TaskVector.load(out / "transferred.safetensors")
    assert moved.meta["control"] == "norm"
    for site, norm in tv.norms().items():  # cayley is exactly orthogonal: the control's norms are the vector's
        assert moved.norms()[site] == pytest.approx(norm, rel=1e-4)
        assert not torch.allclose(moved.delta(site), tv.delta(site), atol=1e-3)
    alone = runner.invoke(app, [*common, "--control", "other-task", "--out", str(tmp_path / "o")])
    assert alone.exit_code == 2 and "two or more tasks" in alone.output


def test_align_compile_flag_compiles_the_target_forward(align_setup, compiled):
    tmp_path, common, _ = align_setup
    out = tmp_path / "compiled"
    result = runner.invoke(app, [*common, "--method", "cayley", "--compile", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["compile"] is True and len(compiled) == 1 and compiled[0] > 0


def test_resume_accepts_changes_to_how_a_run_goes_not_what_it_computes(align_setup, compiled):
    """A run folder from before `compile` existed (and with the old log_every) resumes; --compile may be switched."""
    tmp_path, common, _ = align_setup
    out = tmp_path / "old"
    assert runner.invoke(app, [*common, "--method", "cayley", "--out", str(out)]).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    del config["compile"]
    config["log_every"] = 1
    (out / "config.json").write_text(json.dumps(config))
    resumed = runner.invoke(app, [*common, "--method", "cayley", "--out", str(out), "--resume", "--compile"])
    assert resumed.exit_code == 0, resumed.output
    changed = runner.invoke(app, [*common, "--method", "cayley", "--lr", "0.5", "--out", str(out), "--resume"])
    assert changed.exit_code == 2 and "settings differ" in changed.output and "(lr)" in changed.output
