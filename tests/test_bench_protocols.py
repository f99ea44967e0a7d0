"""`bench --suite paper` end to end with each shipped protocol, on generated data for the eight datasets.

Each run takes a shipped config (configs/paper-text.toml, paper-code.toml, paper.toml)
with only its budget shrunk to seconds (shots, batch, steps, learning rates); every
protocol choice (mode, lambda grid, held-out fraction, augmentation, penalty form,
weight decay) is the shipped one.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import tomllib
import torch
from safetensors.torch import save_file
from test_data_paper import MAKERS
from typer.testing import CliRunner

import orthoxfer.experiments.bench as bench_module
import orthoxfer.experiments.tune as tune_module
from orthoxfer.alignment.artifact import Alignment
from orthoxfer.cli import app
from orthoxfer.evaluation.baselines import SCALES
from orthoxfer.models.small import small_clip
from orthoxfer.vectors.sites import find_sites, read_site

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASKS = list(MAKERS)
SHOTS = 5
# the budget, sized for seconds; everything else is the shipped protocol's
TINY = {
    "finetune": {"lr": 1e-3, "steps": 2, "warmup": 1, "batch_size": 4, "rank": 2},
    "align": {"lr": 1e-2, "shots": SHOTS, "batch_size": 4, "augment": 2, "checkpoint_every": 0},
    "fewshot_ft": {"lr": 1e-3, "batch_size": 4, "augment": 2, "checkpoint_every": 0},
}


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def shrunk(name: str, path: Path) -> Path:
    """The shipped config ``name`` with the :data:`TINY` budget, written to ``path``."""
    tables = tomllib.loads((CONFIGS / name).read_text())
    for section, values in TINY.items():
        tables[section].update(values)
        tables[section]["warmup"] = min(tables[section].get("warmup", 0), 1)
    path.write_text(
        "\n".join(f"[{s}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items()) for s, t in tables.items())
    )
    return path


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory, tiny_arch):
    root = tmp_path_factory.mktemp("protocols")
    for make in MAKERS.values():
        make(root / "data")
    save_file(small_clip(seed=7, layers=1).state_dict(), str(root / "source.safetensors"))
    return root, tiny_arch


def run_bench(root: Path, arch: str, config: str, out: str, patch: pytest.MonkeyPatch, *extra: str):
    args = [
        "bench",
        "--suite",
        "paper",
        "--config",
        str(shrunk(config, root / f"{out}.toml")),
        "--source",
        f"{arch}:{root / 'source.safetensors'}",
        "--target",
        f"{arch}:none",
        "--data-root",
        str(root / "data"),
        "--vectors",
        str(root / "vectors"),  # shared: the source vectors are fine-tuned once, by the first run
        "--methods",
        "penalty",
        "--no-procrustes-init",
        "--steps",
        str(2 * len(TASKS)),
        "--out",
        str(root / out),
        *(() if "--kinds" in extra else ("--kinds", "embed")),
        "--device",
        "cpu",
        "--cache-dir",
        str(root / "weights"),
        *extra,
    ]
    patch.setenv("ORTHOXFER_CACHE", str(root / "cache"))  # zero-shot heads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    rows = root / out / "rows"
    return {p.stem.removesuffix("-seed0"): json.loads(p.read_text()) for p in rows.glob("*.json")}


def spy(patch: pytest.MonkeyPatch, name: str, calls: list, module: Any = bench_module):
    """Record the arguments of ``module``'s ``name`` (bench's by default) and call through."""
    real = getattr(module, name)

    def recorded(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    patch.setattr(module, name, recorded)


def refuse(patch: pytest.MonkeyPatch, name: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"{name} read validation data")

    patch.setattr(bench_module, name, refused)


def test_text_protocol_trains_on_every_image_reads_no_validation_and_sums_eight_u_sets(paper_data):
    root, arch = paper_data
    aligned, tuned, tested = [], [], []
    with pytest.MonkeyPatch.context() as patch:
        refuse(patch, "pool_accuracy")  # scoring validation pools: never, with lambda fixed and nothing held out
        refuse(patch, "direct_addition")  # choosing lambda: never
        spy(patch, "align", aligned)
        spy(patch, "fewshot_finetune", tuned, tune_module)
        spy(patch, "test_accuracy", tested)
        rows = run_bench(root, arch, "paper-text.toml", "text", patch)
    assert set(rows) == {"none_target", "none_finetune", "embed_direct", "embed_penalty"}
    (problem, settings, _), _ = aligned[0]
    assert {t: len(p.labels) for t, p in problem.tasks.items()} == dict.fromkeys(TASKS, SHOTS)  # all 100 (here 5)
    assert settings.mode == "per-task-summed" and settings.steps == 2 and settings.weight_decay == 0.1
    (_, train, _, _), kwargs = tuned[0]
    assert {t: len(p.labels) for t, p in train.items()} == dict.fromkeys(TASKS, SHOTS) and kwargs["validation"] is None
    for row in rows.values():
        assert "validation" not in row and row["scale"] in (None, 1.0)
    alignment = Alignment.load(root / "text" / "rows" / "embed_penalty-seed0" / "alignment.safetensors")
    assert alignment.scopes == TASKS  # eight per-task U sets ...
    models, inputs, _ = tested[4][0]  # target, finetune, direct (at its lambda, then at 1), penalty
    assert len({id(m) for m in models.values()}) == 1  # ... carried into ONE model scored on all eight tasks
    model = next(iter(models.values()))
    carried = sum(
        alignment.apply(inputs.vectors["embed"][t].select(alignment.sites), task=t) for t in TASKS
    )  # W + sum_i U_i^T dW_i U_i at lambda 1
    for site in find_sites(inputs.target, "attn"):
        moved = read_site(model, site) - read_site(inputs.target, site)
        torch.testing.assert_close(moved, carried.delta(site.name), atol=1e-6, rtol=1e-5)


def test_code_protocol_runs_joint_with_the_codes_penalty(paper_data):
    root, arch = paper_data
    with pytest.MonkeyPatch.context() as patch:
        refuse(patch, "direct_addition")
        rows = run_bench(root, arch, "paper-code.toml", "code", patch)
    alignment = Alignment.load(root / "code" / "rows" / "embed_penalty-seed0" / "alignment.safetensors")
    assert alignment.scopes == ["joint"] and alignment.meta["settings"]["penalty_form"] == "reference"
    assert alignment.meta["settings"]["augmentation"] == "paper-code" and rows["embed_penalty"]["scale"] == 1.0
    config = json.loads((root / "code" / "config.json").read_text())
    assert config["bench"]["mode"] == "joint" and config["bench"]["scales"] == [1.0]


def test_reference_lora_sum_flag_sums_the_lora_rows_as_the_code_did(paper_data):
    root, arch = paper_data
    summed = []
    with pytest.MonkeyPatch.context() as patch:
        spy(patch, "reference_lora_sum", summed)
        rows = run_bench(root, arch, "paper-code.toml", "lora", patch, "--kinds", "lora", "--reference-lora-sum")
    assert {"lora_direct", "lora_penalty"} <= set(rows)
    assert len(summed) == 2 and all([v.meta["tasks"] for v in args[0]] == [[t] for t in TASKS] for args, _ in summed)
    assert json.loads((root / "lora" / "config.json").read_text())["bench"]["reference_lora_sum"] is True


def test_default_protocol_chooses_lambda_on_held_out_images(paper_data):
    root, arch = paper_data
    with pytest.MonkeyPatch.context() as patch:
        rows = run_bench(root, arch, "paper.toml", "default", patch, "--scales", "0,1")
    for key in ("embed_direct", "embed_penalty"):
        assert rows[key]["scale"] in SCALES and set(rows[key]["validation"]) == {"0.0", "1.0"}
    config = json.loads((root / "default" / "config.json").read_text())
    assert config["bench"]["scales"] == [0.0, 1.0] and "val_fraction" not in config["bench"]  # 0.2: the default


def test_val_fraction_zero_with_a_grid_is_refused_before_any_work(paper_data, tmp_path):
    root, arch = paper_data
    result = CliRunner().invoke(
        app,
        ["bench", "--suite", "paper", "--val-fraction", "0", "--out", str(tmp_path / "run")],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--val-fraction 0 holds nothing out" in result.output and not (tmp_path / "run").exists()
