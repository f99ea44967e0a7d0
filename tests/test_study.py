"""``orthoxfer study`` on the micro mini suite: its files, gains paired from the stored rows, resume, bad input."""

import dataclasses
import json
import math
import re
import statistics

import pytest
import torch
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.errors import UsageError
from orthoxfer.experiments.auto import AUTO
from orthoxfer.experiments.bench import Row
from orthoxfer.experiments.bench_settings import resolve_bench
from orthoxfer.experiments.study import RungResult, StudyPlan
from orthoxfer.report.study import markdown, summarise_study
from orthoxfer.report.tables import interval

runner = CliRunner()
METHODS = ("orthogonal-shift",)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    (root / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")  # source vectors in seconds
    args = [
        "study",
        "--config",
        str(root / "fast.toml"),
        "--size",
        "micro",
        "--steps",
        "1",
        "--tasks",
        "mnist",
        "--rungs",
        "same,data",
        "--methods",
        ",".join(METHODS),
        "--paper-controls",
        "norm",
        "--seeds",
        "2",
        "--anchored",
        "",
        "--tune-from",
        "",
        "--no-auto",
        "--out",
        str(root / "out"),
        "--cache-dir",
        str(root / "cache"),
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, args, result


def stored_mean(out, rung, row, seed):
    return json.loads((out / rung / "rows" / f"{row}-seed{seed}.json").read_text())["accuracy"]["mean"]


def test_study_writes_its_files_with_gains_paired_from_the_stored_rows(study):
    root, _, result = study
    out = root / "out"
    for name in (
        "study.json",
        "study.md",
        "gain_vs_cka.png",
        "gain_vs_transferability.png",
        "same/config.json",
        "data/config.json",
    ):
        assert (out / name).is_file(), name
    assert "orthoxfer study: 22 rows = rows per seed (same 5, data 6) x 2 seeds" in result.output
    assert "data: [6/6] embed, orthogonal-shift [control: norm] (seed 1)" in result.output
    data = json.loads((out / "study.json").read_text())
    assert [r["rung"] for r in data["rungs"]] == ["same", "data"] and data["meta"]["seeds"] == [0, 1]
    assert data["meta"]["rung_controls"] == {
        "same": ["spectrum"],
        "data": ["spectrum", "norm"],
    }  # more on the paper's rung
    assert [r["controls"] for r in data["rungs"]] == [["spectrum"], ["spectrum", "norm"]]
    assert [set(r["methods"]["orthogonal-shift"]["controls"]) for r in data["rungs"]] == [
        {"spectrum"},
        {"spectrum", "norm"},
    ]
    assert data["meta"]["model_seed"] == 0 and data["meta"]["machine"]["device"] == "cpu"
    for rung in data["rungs"]:
        for control in rung["controls"]:
            gain = rung["methods"]["orthogonal-shift"]["controls"][control]["gain"]
            diffs = [
                stored_mean(out, rung["rung"], "embed_orthogonal-shift", s)
                - stored_mean(out, rung["rung"], f"embed_orthogonal-shift_control-{control}", s)
                for s in (0, 1)
            ]
            assert gain["per_seed"] == pytest.approx(diffs, abs=1e-12)
            assert gain["mean"] == pytest.approx(sum(diffs) / 2, abs=1e-12)
        assert rung["baselines"]["target"]["per_seed"] == [
            stored_mean(out, rung["rung"], "none_target", s) for s in (0, 1)
        ]
        assert len(rung["relatedness"]["0"]) > 1  # per depth
    same, other = data["rungs"]
    assert same["last_block_cka"]["mean"] == pytest.approx(1.0, abs=1e-4)  # the target is the source
    assert other["last_block_cka"]["mean"] < 0.999
    at_one = [json.loads((out / "same" / "rows" / f"embed_direct-seed{s}.json").read_text()) for s in (0, 1)]
    assert data["ceiling"]["per_seed"] == [r["accuracy_scale1"]["mean"] for r in at_one]  # the source fine-tuned
    assert data["ceiling"]["at_validation_lambda"] == same["baselines"]["direct"]
    check = data["transferability_check"]  # same carries, data does not: one mnist value per rung
    assert check["tasks"] == 1 and [v["task"] for v in check["values"]] == ["mnist"]
    assert check["seed_spread"] == 0.0  # the data-free transfers read no pools: every seed scores them alike
    md = (out / "study.md").read_text()
    assert "| same | mini:a | 1.00 |" in md and "| data |" in md and "orthogonal-shift | " in md
    assert json.loads((out / "same" / "config.json").read_text())["model_seed"] == 0


def test_resume_reuses_every_row_and_a_full_folder_is_refused_without_it(study):
    root, args, _ = study
    rows = sorted((root / "out").glob("*/rows/*.json"))
    before = {p: p.stat().st_mtime_ns for p in rows}
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert again.output.count("reused") == len(rows) == 22
    assert {p: p.stat().st_mtime_ns for p in rows} == before
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--resume" in refused.output


def test_summarise_reads_rows_made_by_other_code_and_computes_none(study, monkeypatch):
    import orthoxfer.cli.study as cli_study
    import orthoxfer.runs as runs

    root, args, _ = study
    out = root / "out"
    rows = sorted(out.glob("*/rows/*.json"))
    configs = {p: p.read_text() for p in out.glob("*/config.json")}
    before = json.loads((out / "study.json").read_text())
    made = before["rungs"][0]["code"][0]["source"]
    other = {"version": "0.1.0", "source": "summary-code"}
    monkeypatch.setattr(runs, "code_version", lambda: other)
    monkeypatch.setattr(cli_study, "code_version", lambda: other)
    refused = runner.invoke(app, [*args, "--resume"])
    assert refused.exit_code == 2 and "made by other code" in refused.output  # a resume would mix versions
    stamps = {p: p.stat().st_mtime_ns for p in rows}
    summary = runner.invoke(app, [*args, "--summarise"])
    assert summary.exit_code == 0, summary.output
    assert summary.output.count("reused") == len(rows) and {p: p.stat().st_mtime_ns for p in rows} == stamps
    assert {p: p.read_text() for p in configs} == configs  # the rows' code stays the one recorded
    after = json.loads((out / "study.json").read_text())
    assert after["meta"]["summarised_with"] == other
    assert [r["code"] for r in after["rungs"]] == [[before["rungs"][0]["code"][0]]] * 2
    assert [r["methods"] for r in after["rungs"]] == [r["methods"] for r in before["rungs"]]
    assert f"made by code {made}; summary by summary-code" in (out / "study.md").read_text()
    wiped = runner.invoke(app, [*args, "--summarise", "--overwrite"])
    assert wiped.exit_code == 2 and "would delete the rows" in wiped.output and all(p.exists() for p in rows)
    steps = args.index("--steps") + 1
    other = runner.invoke(app, [*args[:steps], "2", *args[steps + 1 :], "--summarise"])
    assert other.exit_code == 2 and "summarise with the settings the study ran with" in other.output
    (out / "data" / "rows" / "embed_orthogonal-shift-seed1.json").rename(out / "moved.json")
    try:
        missing = runner.invoke(app, [*args, "--summarise"])
        assert missing.exit_code == 2 and "data: rows not computed yet (seed 1: 1 of 6)" in missing.output
    finally:
        (out / "moved.json").rename(out / "data" / "rows" / "embed_orthogonal-shift-seed1.json")


def test_some_rungs_and_seeds_of_a_study_summarised_as_a_study_of_their_own_with_the_sources_ceiling(study, tmp_path):
    root, args, _ = study
    out = root / "out"
    part = [*args[: args.index("--rungs")], "--rungs", "data", *args[args.index("--rungs") + 2 :]]
    part[part.index("--seeds") + 1] = "1"
    part[part.index("--out") + 1] = str(tmp_path / "part")
    alone = runner.invoke(app, [*part, "--summarise", "--rows-from", str(out)])
    assert alone.exit_code == 0, alone.output
    assert not (tmp_path / "part" / "data").exists()  # rows read where they are, not copied
    summary = json.loads((tmp_path / "part" / "study.json").read_text())
    assert [r["rung"] for r in summary["rungs"]] == ["data"] and summary["meta"]["seeds"] == [0]
    whole = json.loads((out / "study.json").read_text())
    assert summary["rungs"][0]["methods"]["orthogonal-shift"]["accuracy"]["per_seed"] == [
        whole["rungs"][1]["methods"]["orthogonal-shift"]["accuracy"]["per_seed"][0]
    ]
    # no same rung: the source's own fine-tuned accuracy measured without it, as the same rung's direct row records it
    assert "same rung not run" in summary["ceiling"]["from"]
    assert summary["ceiling"]["per_seed"] == pytest.approx([whole["ceiling"]["per_seed"][0]], abs=1e-6)
    assert "source_ceiling" not in whole["meta"]  # where same runs, its row is the ceiling
    assert "the source's vectors at lambda = 1 on the source" in (tmp_path / "part" / "study.md").read_text()
    again = runner.invoke(app, [*part, "--summarise", "--rows-from", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output  # another folder's summary is not replaced unasked
    assert runner.invoke(app, [*part, "--summarise", "--rows-from", str(out), "--overwrite"]).exit_code == 0
    unasked = runner.invoke(app, [*part, "--rows-from", str(out)])
    assert unasked.exit_code == 2 and "add --summarise" in unasked.output
    empty = runner.invoke(app, [*part, "--summarise", "--rows-from", str(tmp_path / "part")])
    assert empty.exit_code == 2 and "no study rows in" in empty.output
    assert not (tmp_path / "part" / "data").exists()


def test_resume_after_the_models_changed_is_refused(study, monkeypatch):
    from orthoxfer.models import pretrain

    root, args, _ = study
    recorded = json.loads((root / "out" / "data" / "config.json").read_text())["pretrain_recipe"]
    monkeypatch.setattr(pretrain, "TRAIN_VERSION", pretrain.TRAIN_VERSION + 1)  # what a new pre-training recipe does
    refused = runner.invoke(app, [*args, "--resume"])
    assert refused.exit_code == 2 and "pretrain_recipe" in refused.output, refused.output
    assert json.loads((root / "out" / "same" / "config.json").read_text())["pretrain_recipe"] == recorded  # kept


def test_the_other_task_control_with_one_task_is_refused_before_any_row(tmp_path):
    result = runner.invoke(
        app, ["study", "--rungs", "same,data", "--tasks", "mnist", "--size", "micro", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "other-task control needs two or more tasks" in lines[0]
    assert not (tmp_path / "out").exists()  # the default --paper-controls has it; the same rung did not run first


def test_the_default_study_runs_the_evidence_protocol(monkeypatch, tmp_path):
    """Five seeds; per-task few-shot FT with its step chosen on validation; anchored, transfer-then-tune and auto
    rows; each method beside the controls valid for it; all recorded in each rung's config."""
    import orthoxfer.experiments.study as study_module

    seen = {}

    def stop(plan, rung, out, progress):
        seen["plan"], seen["config"] = plan, plan.rung_config(rung)
        raise UsageError("stop here")

    monkeypatch.setattr(study_module, "run_rung", stop)
    result = runner.invoke(app, ["study", "--rungs", "release", "--device", "cpu", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "stop here" in result.output, result.output
    plan, config = seen["plan"], seen["config"]
    assert plan.seeds == 5 and config["fewshot_ft"]["select_every"] == 10
    rows = plan.settings["mini"].bench.rows()
    ids = {r.id for r in plan.bench("release").rows()}
    assert {"embed_penalty_anchored", "embed_cayley_anchored", "embed_tune_init-direct"} <= ids
    assert {"embed_tune_init-transfusion", "none_auto", "embed_penalty_anchored_control-spectrum"} <= ids
    assert not any(r.control == "orbit" and r.method == "penalty" for r in rows)
    assert config["bench"]["anchored"] == ["identity"] and config["bench"]["auto"] is True


def test_bad_rungs_are_refused_in_one_line(tmp_path):
    result = runner.invoke(app, ["study", "--rungs", "same,cousin", "--size", "micro", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown rung 'cousin'" in lines[0] and "planted" in lines[0]
    assert not (tmp_path / "out").exists()


def test_planted_rung_has_its_ceiling_row_and_gains_are_paired_means_with_t_intervals():
    choices = {
        "methods": ("cayley", "gradfix"),
        "kinds": ("embed",),
        "controls": ("spectrum",),
        "procrustes_init": False,
        "ties": ("site",),
        "lrs": None,
        "mode": None,
    }
    settings = {s: resolve_bench(s, "micro", torch.device("cpu"), choices=choices) for s in ("mini", "planted")}
    plan = StudyPlan(("data", "planted"), 3, ("mnist",), "micro", settings)
    assert plan.rows("data") == 3 + 2 * 2 and plan.rows("planted") == plan.rows("data") + 1
    assert plan.total_rows() == 3 * (7 + 8)
    more = StudyPlan(
        ("data", "planted"), 1, ("mnist",), "micro", settings, rung_controls={"data": ("norm", "spectrum")}
    )
    assert more.controls("data") == ("spectrum", "norm") and more.controls("planted") == ("spectrum",)
    assert more.rows("data") == 3 + 2 * 3 and more.rows("planted") == plan.rows("planted")
    real, ctrl = [0.50, 0.60, 0.55], [0.40, 0.45, 0.50]
    rows = {
        Row("embed", "cayley"): real,
        Row("embed", "cayley", control="spectrum"): ctrl,
        Row("", "target"): ctrl,
        Row("embed", "direct"): real,
    }
    records = [
        {
            "row": r.id,
            "label": r.label,
            **dataclasses.asdict(r),
            "seed": s,
            "accuracy": {"mean": acc[s]},
            "seconds": 1.0,
        }
        for r, acc in rows.items()
        for s in range(3)
    ]
    layers = [{"cka": 0.3}, {"cka": 0.7}]
    result = RungResult(
        "same",
        "mini:a",
        "mini:a",
        ["mnist"],
        ("spectrum",),
        records,
        {"0": layers, "1": layers, "2": [{"cka": 0.9}]},
        3.0,
    )
    data = summarise_study([result], ["cayley", "gradfix"], {"seeds": [0, 1, 2]})
    rung = data["rungs"][0]
    gain = rung["methods"]["cayley"]["controls"]["spectrum"]["gain"]
    mean, half = interval([0.10, 0.15, 0.05])
    assert (
        gain["mean"] == pytest.approx(0.10)
        and gain["mean"] == pytest.approx(mean)
        and gain["ci95"] == pytest.approx(half)
    )
    assert half == pytest.approx(4.302653 * 0.05 / 3**0.5, rel=1e-5)  # t_{0.975, 2} * sd / sqrt(n)
    assert "gradfix" not in rung["methods"]  # no rows, no entry
    assert rung["last_block_cka"]["mean"] == pytest.approx((0.7 + 0.7 + 0.9) / 3)
    assert data["ceiling"]["mean"] == pytest.approx(sum(real) / 3) and rung["row_seconds"] == 12.0


def test_width_selects_models_of_that_width_built_on_first_use(tmp_path):
    from orthoxfer.experiments.study import check_models_built
    from orthoxfer.models.pretrain import PretrainConfig
    from orthoxfer.suites.mini import models_record

    narrow = dataclasses.replace(PretrainConfig.micro(), width=16)
    settings = {"mini": resolve_bench("mini", "micro", torch.device("cpu"), choices={"methods": METHODS})}
    plan = StudyPlan(("data",), 1, ("mnist",), "micro", settings, cache_dir=tmp_path / "cache", width=16)
    with pytest.raises(UsageError, match="width-16 models a, b are not pre-trained yet.*--width 16 --size micro"):
        check_models_built(plan)  # under torchrun: pre-trained first, in one process
    assert (
        plan.rung_config("data")["pretrain_recipe"] == narrow.recipe_hash() != models_record("micro")["pretrain_recipe"]
    )
    (tmp_path / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")
    args = ["study", "--config", str(tmp_path / "fast.toml"), "--size", "micro", "--steps", "1", "--tasks", "mnist"]
    args += [
        "--rungs",
        "data",
        "--methods",
        ",".join(METHODS),
        "--paper-controls",
        "",
        "--seeds",
        "1",
        "--anchored",
        "",
    ]
    args += ["--tune-from", "", "--no-auto", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--width", "16", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "study.json").read_text())["meta"]["width"] == 16
    assert (
        json.loads((tmp_path / "out" / "data" / "config.json").read_text())["pretrain_recipe"] == narrow.recipe_hash()
    )
    assert {p.name for p in (tmp_path / "cache" / "mini" / narrow.key()).glob("model_*")} == {
        "model_a.safetensors",
        "model_b.safetensors",
    }
    check_models_built(plan)  # now they are
    refused = runner.invoke(app, [*args, "--width", "12", "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "width 12 must be a positive multiple of the head width 8" in refused.output
    assert not (tmp_path / "no").exists()


def test_a_rung_takes_its_own_rates_over_the_suites_and_its_config_json_records_them(tmp_path):
    from orthoxfer.experiments.study import rung_rates

    config = tmp_path / "rates.toml"
    config.write_text("[bench.rates]\npenalty = 0.01\n[study.rates.same]\npenalty = 0.003\nfinetune = 0.001\n")
    settings = {"mini": resolve_bench("mini", "micro", torch.device("cpu"), config, tasks=1)}
    plan = StudyPlan(("same", "data"), 1, ("mnist",), "micro", settings, rung_rates=rung_rates(config))
    assert plan.bench("same").rates == {"penalty": 0.003, "finetune": 0.001}
    assert plan.bench("data").rates == {"penalty": 0.01}
    assert plan.rung_config("same")["bench"]["rates"] == {"penalty": 0.003, "finetune": 0.001}  # resume sees a change
    assert plan.rung_config("data")["bench"]["rates"] == {"penalty": 0.01}
    assert rung_rates(None) == {}
    for bad, message in (
        ("[study.rates.nowhere]\npenalty = 0.1\n", "names 'nowhere', not a rung"),
        ("[study.rates]\nsame = 0.1\n", "must be a table of rates"),
        ("[study.rates.same]\nprocrustes = 0.1\n", "not a positive rate of a trained method"),
        ('[study.rates.same]\n"penalty/nothing" = 0.1\n', "or of its rows on a control"),
    ):
        config.write_text(bad)
        with pytest.raises(UsageError, match=message):
            StudyPlan(("same",), 1, ("mnist",), "micro", settings, rung_rates=rung_rates(config)).bench("same")


def test_a_control_row_takes_its_own_rate_and_a_rung_its_own_beta_and_seeds_start_past_the_chosen_one(tmp_path):
    """A rate chosen for the real vector would handicap its control; a beta that keeps U home pays only where home
    carries the vector; seeds past the selection's own leave no seed that chose its settings."""
    from orthoxfer.experiments.study import rung_anchors, rung_rates

    config = tmp_path / "study.toml"
    config.write_text(
        '[bench]\nanchor = 0.1\n[study.rates.same]\npenalty = 0.003\n"penalty/spectrum" = 0.03\n'
        "[study.anchors]\nsame = 10.0\ndata = 0\n"
    )
    settings = {"mini": resolve_bench("mini", "micro", torch.device("cpu"), config, tasks=1)}
    plan = StudyPlan(
        ("same", "release", "data"),
        2,
        ("mnist",),
        "micro",
        settings,
        rung_rates=rung_rates(config),
        rung_anchors=rung_anchors(config),
        first_seed=1,
    )
    same = plan.bench("same")
    assert same.rate("penalty") == 0.003 and same.rate("penalty", "spectrum") == 0.03
    assert same.rate("penalty", "norm") == 0.003  # no rate of its own: the method's
    assert same.rate("tune", "spectrum") == same.rate("finetune") is None  # the suite's own
    assert [plan.bench(r).anchor["anchor"] for r in ("same", "release", "data")] == [10.0, 0.1, 0]
    assert plan.rung_config("same")["bench"]["anchor"]["anchor"] == 10.0  # a resume sees a change
    assert plan.seed_list() == [1, 2] and "disjoint_pools" not in plan.rung_config("same")
    apart = dataclasses.replace(plan, disjoint_pools=True)
    assert apart.rung_config("same")["disjoint_pools"] is True  # a study with its own source vectors: not resumable
    config.write_text("[study.anchors]\nsame = -1\n")
    with pytest.raises(UsageError, match="must be a beta >= 0"):
        rung_anchors(config)


def test_a_difference_without_seed_variation_is_not_tested_and_power_is_at_holms_strictest_level():
    from scipy import stats

    from orthoxfer.report.statistics import detectable_gain, holm, paired

    steady = paired([0.5, 0.5, 0.5], [0.4, 0.4, 0.4])  # rows that draw nothing from the seed: no p-value to give
    assert steady["p"] is None and steady["untested"] and steady["mean"] == pytest.approx(0.1)
    varied = [paired([0.5, 0.6, 0.55], [0.4, 0.42, 0.47]), paired([0.5, 0.52, 0.49], [0.5, 0.5, 0.5])]
    family = [steady, *varied]
    holm(family)
    assert "p_holm" not in steady and all("p_holm" in t for t in varied)
    sd = statistics.median(statistics.stdev(t["per_seed"]) for t in varied)
    expected = (stats.t.ppf(1 - 0.05 / 2 / 2, 2) + stats.t.ppf(0.8, 2)) * sd / math.sqrt(3)  # two tested: 5% / 2
    assert detectable_gain(family, 3) == pytest.approx(expected)
    assert "detectable" not in steady
    own = [
        (stats.t.ppf(1 - 0.05 / 2 / 2, 2) + stats.t.ppf(0.8, 2)) * statistics.stdev(t["per_seed"]) / math.sqrt(3)
        for t in varied
    ]  # each comparison's power from its own spread: the noisier one needs the larger gain
    assert [t["detectable"] for t in varied] == pytest.approx(own) and own[0] != pytest.approx(own[1])
    assert detectable_gain([steady], 3) is None


def test_anchored_rows_are_paired_with_their_strategy_unanchored_and_auto_described_against_the_best_row_on_test():
    accuracy = {
        Row("", "finetune"): [0.50, 0.52, 0.54],
        Row("embed", "penalty"): [0.60, 0.70, 0.65],
        Row("embed", "penalty", anchored=True): [0.62, 0.71, 0.69],
        Row("embed", "penalty", control="spectrum"): [0.90, 0.90, 0.90],  # a control is no row auto chooses
        Row("", AUTO): [0.70, 0.80, 0.75],  # best of all on test: still compared with the best *other* row
    }
    records = [
        {
            "row": r.id,
            "label": r.label,
            **dataclasses.asdict(r),
            "seed": s,
            "accuracy": {"mean": acc[s]},
            # the anchored row's step chosen as the best of several checkpoints: validation flatters it by 5 points
            **({} if r.method == AUTO else {"validation_score": {"mnist": acc[s] + 0.05 * r.anchored}}),
        }
        for r, acc in accuracy.items()
        for s in range(3)
    ]
    result = RungResult("data", "mini:a", "mini:b", ["mnist"], ("spectrum",), records, {}, 1.0)
    study = summarise_study([result], ["penalty"], {"seeds": [0, 1, 2]})
    methods = study["rungs"][0]["methods"]
    anchored = methods["penalty (anchored)"]["vs_unanchored"]
    assert anchored["per_seed"] == pytest.approx([0.02, 0.01, 0.04]) and "p_holm" in anchored
    said = methods["penalty (anchored)"]["vs_unanchored_validation"]  # what validation promised, beside the test
    assert said["per_seed"] == pytest.approx([0.07, 0.06, 0.09]) and "p" not in said
    best = methods["auto (chosen on validation)"]["vs_best_other"]
    assert best["row"] == "embed, penalty (anchored)" and best["per_seed"] == pytest.approx([0.08, 0.09, 0.06])
    assert "p" not in best and "p_holm" not in best  # chosen on test: described, not tested
    assert "vs_unanchored" not in methods["penalty"] and "vs_best_other" not in methods["penalty (anchored)"]
    meta = {"title": "t", "tasks": ["mnist"], "model_seed": 0, "seconds": 1.0, "machine": {"cpu": "c", "device": "cpu"}}
    table = markdown({**study, "meta": {**study["meta"], **meta}})
    assert (
        "| data | auto (chosen on validation) | the best other row on test (embed, penalty (anchored)) | +7.7" in table
    )
    assert "| data | penalty (anchored) | the same strategy unanchored, its last step | +2.3" in table
    assert re.search(
        r"\| data \| penalty \(anchored\) \| the same strategy unanchored.* \| \+7\.3 ± \d+\.\d \|$", table, re.M
    )
