"""The mini suite's ladder of relatedness (--pair same | release | seed | data), at micro size."""

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

import orthoxfer.cli.bench as bench_cli
from orthoxfer.cli import app
from orthoxfer.data.mini import TASK_NAMES, mini_task
from orthoxfer.data.mini_pools import model_suite
from orthoxfer.errors import UsageError
from orthoxfer.evaluation.accuracy import accuracy
from orthoxfer.experiments.bench import BenchConfig, Row, relatedness, run_row
from orthoxfer.fit.finetune import FinetuneSettings
from orthoxfer.models import pretrain as pre
from orthoxfer.runs import Run
from orthoxfer.suites import build_suite, default_tables, open_suite
from orthoxfer.suites.base import SuiteRequest
from orthoxfer.suites.mini import check_pair, mini_test, target_name

runner = CliRunner()
MICRO = pre.PretrainConfig.micro()
TASKS = ("mnist", "coins")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A cache shared by the module's tests (model A and its vectors are made once) and settings that keep them fast."""
    root = tmp_path_factory.mktemp("ladder")
    (root / "fast.toml").write_text("[finetune]\nsteps = 3\nwarmup = 1\n")
    return root


def suite(root, pair):
    source_ft = FinetuneSettings(**{**default_tables("mini", "micro")["finetune"], "steps": 3, "warmup": 1})
    request = SuiteRequest(
        seed=0,
        shots=24,
        size="micro",
        pair=pair,
        tasks=TASKS,
        kinds=("embed",),
        source_ft=source_ft,
        cache_dir=root / "cache",
    )
    return build_suite("mini", request)


@pytest.fixture(scope="module")
def built(root):
    """Every rung's suite inputs (mnist and coins), built once."""
    return {pair: suite(root, pair) for pair in ("same", "release", "seed", "data")}


def _spy_corpus(monkeypatch) -> list[tuple]:
    seen = []
    real = pre.corpus
    monkeypatch.setattr(
        pre, "corpus", lambda name, size, seed: seen.append((name, size, seed)) or real(name, size, seed)
    )
    return seen


def test_seed_rung_trains_on_a_s_corpus_from_another_seed(root, monkeypatch):
    a = pre.pretrained_model("a", MICRO, root / "cache", progress=False)
    seen = _spy_corpus(monkeypatch)
    model, log = pre.pretrain(MICRO, "seed", progress=False)
    assert seen == [("a", MICRO.corpus_size, MICRO.seed_a)]  # the same images as A
    assert log["recipe"] == {"corpus": "a", "corpus_seed": MICRO.seed_a, "seed": MICRO.seed_b, "start": None}
    assert not _same_weights(pre.build_model(MICRO, "seed"), pre.build_model(MICRO, "a"))  # its own init
    assert not _same_weights(model, a)


def test_release_rung_continues_a_s_weights_on_corpus_b_and_is_cached_beside_a(tmp_path, monkeypatch):
    seen = _spy_corpus(monkeypatch)
    release = pre.pretrained_model("release", MICRO, tmp_path, progress=False)  # makes A first
    assert seen == [("a", MICRO.corpus_size, MICRO.seed_a), ("b", MICRO.corpus_size, MICRO.seed_b)]
    folder = tmp_path / "mini" / MICRO.key()
    assert {p.name for p in folder.iterdir()} == {"model_a.safetensors", "model_release.safetensors", "config.json"}
    logs = json.loads((folder / "config.json").read_text())["logs"]
    assert set(logs) == {"a", "release"} and logs["release"]["recipe"]["start"] == "a"
    a = pre.pretrained_model("a", MICRO, tmp_path, progress=False)
    assert not _same_weights(release, a) and _same_weights(release, pre.pretrained_model("release", MICRO, tmp_path))
    still = dataclasses.replace(MICRO, lr=0.0)  # no step moves a weight: what comes out is where it started
    assert _same_weights(pre.pretrain(still, "release", progress=False, start=a)[0], a)
    with pytest.raises(UsageError, match="unknown mini model 'c'; choose a, b, seed, release"):
        pre.pretrained_model("c", MICRO, tmp_path)


def test_every_pair_builds_with_its_target_and_the_same_source_vectors(built, root):
    assert {p: i.target_name for p, i in built.items()} == {
        "same": "mini:a",
        "release": "mini:release",
        "seed": "mini:seed",
        "data": "mini:b",
    }
    assert all(i.source_name == "mini:a" and i.suite == "mini" for i in built.values())
    assert (check_pair(None), target_name(None)) == ("data", "mini:b")  # no pair: data, model B
    same = built["same"]
    assert same.target is not same.source and _same_weights(same.target, same.source)  # a copy of A
    for pair, which in (("release", "release"), ("seed", "seed"), ("data", "b")):
        assert _same_weights(built[pair].target, pre.pretrained_model(which, MICRO, root / "cache", progress=False))
        assert not _same_weights(built[pair].target, same.source)
    for pair, inputs in built.items():  # one source, one set of vectors, whatever the target
        assert all(
            torch.equal(inputs.vectors["embed"][t].delta(s), same.vectors["embed"][t].delta(s))
            for t in TASKS
            for s in same.vectors["embed"][t].sites
        ), pair
    assert torch.equal(built["seed"].relate_images, same.relate_images) and len(same.relate_images) == 2 * 24


def test_relatedness_climbs_the_ladder(built):
    """same is the source (residual 0, CKA 1), release starts from it (close), seed and data start from another init."""
    related = {pair: relatedness(inputs, seed=0) for pair, inputs in built.items()}
    assert [r["depth"] for r in related["same"]] == [0, 1, 2]  # the micro tower: embeddings and two blocks
    assert all(
        r["cka"] == pytest.approx(1, abs=1e-6) and r["procrustes_residual"] == pytest.approx(0, abs=1e-4)
        for r in related["same"]
    )
    for depth, release in enumerate(related["release"]):
        others = [related[p][depth] for p in ("seed", "data")]
        assert 0.001 < release["procrustes_residual"] < min(o["procrustes_residual"] for o in others)
        assert release["cka"] > max(o["cka"] for o in others)
        assert all(o["control_cka"] < o["cka"] < 0.999 for o in others)


def test_same_pair_direct_addition_is_the_source_fine_tuned_accuracy(built, tmp_path):
    """The sanity rung: carrying a vector into the model it came from is fine-tuning that model, on every task."""
    inputs = built["same"]
    config = BenchConfig(kinds=("embed",), scales=(1.0,), mode="per-task")
    record = run_row(Row("embed", "direct"), inputs, config, Run(tmp_path / "run"), seed=0)
    assert record["scale"] == dict.fromkeys(TASKS, 1.0)
    for name in TASKS:
        task = mini_task(name, "micro")
        pool = model_suite(inputs.source, [task], shots=24, seed=0)[
            0
        ].fewshot  # the head the source vector was trained with
        vector = inputs.vectors["embed"][name]
        assert any(vector.delta(s).abs().max() > 0 for s in vector.sites)
        tuned = vector.added_to_copy(inputs.source)
        expected = accuracy(tuned, pool.head, mini_test(task.test_images, task.test_labels)())
        assert record["accuracy"][name] == pytest.approx(expected, abs=1e-9), name


@pytest.fixture(scope="module")
def seed_bench(root):
    args = [
        "bench",
        "--config",
        str(root / "fast.toml"),
        "--suite",
        "mini",
        "--pair",
        "seed",
        "--size",
        "micro",
        "--steps",
        "2",
        "--tasks",
        "mnist",
        "--kinds",
        "embed",
        "--methods",
        "procrustes",
        "--no-procrustes-init",
        "--out",
        str(root / "seed-run"),
        "--cache-dir",
        str(root / "cache"),
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "seed-run", result.output


def test_bench_pair_records_the_pair_and_its_relatedness(seed_bench):
    run, output = seed_bench
    results = json.loads((run / "results.json").read_text())
    meta = results["meta"]
    assert (meta["pair"], meta["source"], meta["target"]) == ("seed", "mini:a", "mini:seed")
    assert json.loads((run / "config.json").read_text())["pair"] == "seed"
    layers = meta["relatedness"]["0"]
    assert [r["layer"] for r in layers] == ["embed (ln_pre)", "block 1", "block 2"]
    assert all(
        0 < r["cka"] < 1 and r["rows"] == 24 * 65 for r in layers
    )  # 24 pool images of 8 x 8 patches + class token
    assert json.loads((run / "relate-seed0.json").read_text())["layers"] == layers
    assert "mini:a vs mini:seed (seed 0), per depth: CKA" in output
    assert [e["label"] for e in results["summary"]] == [
        "target only",
        "target few-shot FT",
        "embed, direct addition",
        "embed, procrustes",
    ]


def test_relate_pair_measures_what_bench_recorded(seed_bench, root):
    run, _ = seed_bench
    result = runner.invoke(
        app,
        [
            "relate",
            "--pair",
            "seed",
            "--size",
            "micro",
            "--limit",
            "24",
            "--cache-dir",
            str(root / "cache"),
            "--device",
            "cpu",
            "--out",
            str(root / "relate"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["source"], report["target"], report["pair"], report["image_count"]) == (
        "mini:a",
        "mini:seed",
        "seed",
        24,
    )
    recorded = json.loads((run / "results.json").read_text())["meta"]["relatedness"]["0"]
    for mine, theirs in zip(report["layers"], recorded, strict=True):  # mnist comes first: the same 24 images
        assert mine["cka"] == pytest.approx(theirs["cka"], abs=1e-9)
        assert mine["procrustes_residual"] == pytest.approx(theirs["procrustes_residual"], abs=1e-9)
    assert (root / "relate" / "relate.png").is_file()
    split = runner.invoke(
        app,
        [
            "relate",
            "--pair",
            "seed",
            "--size",
            "micro",
            "--limit",
            "24",
            "--batch-size",
            "5",
            "--cache-dir",
            str(root / "cache"),
            "--device",
            "cpu",
            "--out",
            str(root / "relate5"),
            "--json",
        ],
    )
    assert split.exit_code == 0, split.output
    for whole, parts in zip(
        report["layers"], json.loads(split.output)["layers"], strict=True
    ):  # batches of 5: the same pairing
        assert parts["rows"] == whole["rows"] and parts["cka"] == pytest.approx(whole["cka"], abs=1e-6)
        assert parts["procrustes_residual"] == pytest.approx(whole["procrustes_residual"], abs=1e-6)
    assert (report["batch_size"], json.loads(split.output)["batch_size"]) == (
        None,
        5,
    )  # recorded: the control depends on it


def test_mini_names_reach_every_rung_s_target(root):
    opened = open_suite("mini", SuiteRequest(size="micro", cache_dir=root / "cache"))
    assert [opened.check(f"mini:{w}") for w in ("a", "b", "seed", "release")] == ["a", "b", "seed", "release"]
    assert _same_weights(opened.load("mini:release").model, pre.pretrained_model("release", MICRO, root / "cache"))


def test_demo_passes_the_pair_and_gives_it_its_own_folder(monkeypatch):
    calls = []
    monkeypatch.setattr(bench_cli, "bench_command", lambda **kwargs: calls.append(kwargs))
    assert runner.invoke(app, ["demo", "--pair", "release", "--size", "micro"]).exit_code == 0
    assert runner.invoke(app, ["demo", "--size", "micro"]).exit_code == 0
    assert [(c["pair"], str(c["out"])) for c in calls] == [("release", "runs/demo-release"), (None, "runs/demo")]
    from orthoxfer.transfers.registry import TRANSFERS  # the demo's table has every method: strategies and transfers

    assert set(calls[0]["methods"].split(",")) == {"penalty", "riemannian", "cayley", "procrustes", *TRANSFERS}
    # full size: the four headroom tasks, embed vectors, the suite's budget for them (100 steps per task:
    # test_bench checks bench sets it from --tasks); --tasks all: the eight
    assert runner.invoke(app, ["demo"]).exit_code == 0 and runner.invoke(app, ["demo", "--tasks", "all"]).exit_code == 0
    assert [(c["tasks"], c["steps"], c["kinds"]) for c in calls[2:]] == [
        ("housenumbers,scenes,relief,pictograms", None, "embed"),
        (",".join(TASK_NAMES), None, "embed"),
    ]


def test_the_demos_tasks_are_the_four_with_most_headroom_as_measured():
    from pathlib import Path

    from orthoxfer.suites.mini import HEADROOM_TASKS

    measured = json.loads((Path(__file__).parents[1] / "benchmarks/results/mini-regime.json").read_text())
    assert list(HEADROOM_TASKS) == measured["headroom_order"][:4]  # re-measure the regime after changing the models


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--suite", "mini", "--pair", "cousin"], "unknown pair 'cousin'; choose same, release, seed, data"),
        (["bench", "--suite", "planted", "--pair", "seed"], "--pair is for --suite mini"),
        (["demo", "--pair", "cousin"], "unknown pair 'cousin'; choose same, release, seed, data"),
        (["relate", "--pair", "cousin"], "unknown pair 'cousin'; choose same, release, seed, data"),
        (["relate", "--pair", "seed", "--target", "mini:b"], "--pair names both models"),
        (["relate", "--source", "mini:a", "--target", "mini:c"], "models are mini:a"),
        (["relate", "--source", "mini:a"], "give --source and --target, or --pair"),
        (["relate", "--pair", "seed", "--images", "."], "leave out --images"),
        (["relate", "--pair", "seed", "--workers", "2"], "--workers is for image folders"),
    ],
)
def test_wrong_pairs_are_one_line_usage_errors(args, message, tmp_path):
    result = runner.invoke(
        app, [*args, "--size", "micro", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "mini").exists() and not (tmp_path / "run").exists()  # refused before any work


def test_pairs_are_for_the_mini_suite_only():
    with pytest.raises(UsageError, match="--pair is for --suite mini"):
        build_suite("planted", SuiteRequest(size="micro", pair="seed"))
    with pytest.raises(UsageError, match="unknown pair"):
        build_suite("mini", SuiteRequest(size="micro", pair="cousin"))
