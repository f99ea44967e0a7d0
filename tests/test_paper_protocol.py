"""The paper's protocols as shipped configs: each resolves to what docs/paper-protocol.md says, and what they need.

The text's protocol (configs/paper-text.toml), the released code's (configs/paper-code.toml)
and orthoxfer's own (configs/paper.toml, the defaults) resolve through ``resolve_bench``
exactly as ``bench`` resolves them; the docs table is read cell by cell against them.
"""

import json
import re
from pathlib import Path

import pytest
import tomllib
import torch
from torchvision.transforms import v2
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.data.fewshot import augmentation
from orthoxfer.errors import UsageError
from orthoxfer.experiments.bench import BenchConfig
from orthoxfer.experiments.bench_settings import resolve_bench
from orthoxfer.fit.align_step import bf16
from orthoxfer.fit.stepper import autocast_for
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.suites import build_suite
from orthoxfer.suites.base import SuiteRequest
from orthoxfer.suites.paper import PaperSuite
from orthoxfer.vectors.taskvector import TaskVector

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"default": "paper.toml", "paper-text": "paper-text.toml", "paper-code": "paper-code.toml"}
CPU = torch.device("cpu")


def resolved(name: str):
    return resolve_bench("paper", "full", CPU, ROOT / "configs" / CONFIGS[name])


def value(settings, section: str, key: str):
    """What ``bench`` runs with for one ``[section] key`` of a config."""
    if section == "bench" or (section == "align" and key == "mode"):
        return getattr(settings.bench, key)
    if section == "align" and key == "shots":
        return settings.shots
    table = {"align": settings.bench.align, "fewshot_ft": settings.bench.fewshot_ft, "finetune": settings.source_ft}
    return getattr(table[section], key)


def test_text_protocol_resolves_to_the_papers_text():
    s = resolved("paper-text")
    a = s.bench.align
    assert (a.lr, a.weight_decay, a.alpha, a.penalty_form, a.scale, a.augment) == (1e-5, 0.1, 1.0, "paper", 1.0, 10)
    assert (s.shots, a.augmentation, a.warmup, a.init) == (100, "paper-text", 0, "identity")
    assert s.bench.mode == "per-task-summed" and s.bench.scales == (1.0,) and s.bench.val_fraction == 0
    assert a.steps == 800  # 100 mini-batches per dataset x 8: bench gives each task's U's 100
    assert (s.bench.fewshot_ft.lr, s.bench.fewshot_ft.weight_decay, s.bench.fewshot_ft.steps) == (1e-5, 0.1, 800)
    assert s.record()["bench"]["scales"] == [1.0] and s.record()["bench"]["val_fraction"] == 0


def test_code_protocol_resolves_to_the_released_code():
    s = resolved("paper-code")
    a = s.bench.align
    assert (a.steps, a.warmup, a.batch_size, a.lr, a.weight_decay, a.clip) == (6400, 500, 128, 1e-5, 0.1, 1.0)
    assert (a.penalty_form, a.alpha, a.augmentation, s.bench.mode) == ("reference", 1.0, "paper-code", "joint")
    assert s.bench.scales == (1.0,) and s.bench.val_fraction == 0 and s.bench.fewshot_ft.steps == 6400


def test_default_protocol_holds_out_and_chooses():
    s = resolved("default")
    assert len(s.bench.scales) > 1 and s.bench.val_fraction == 0.2 and s.bench.mode == "joint"
    assert "scales" not in s.record()["bench"]  # defaults stay out of config.json: older runs resume


def docs_rows() -> list[tuple[str, str, dict[str, str]]]:
    """(section, key, {config name: cell}) for every row of the docs table that names a config key."""
    text = (ROOT / "docs" / "paper-protocol.md").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| setting |"))  # the table by setting
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    columns = {name: next(i for i, h in enumerate(header) if f"`{file}`" in h) for name, file in CONFIGS.items()}
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        match = re.fullmatch(r"`\[(\w+)\] (\w+)`", cells[0])
        if match and len(cells) == len(header):
            rows.append((match[1], match[2], {name: cells[i] for name, i in columns.items()}))
    return rows


def test_docs_table_states_what_each_config_resolves_to():
    rows = docs_rows()
    assert len(rows) >= 20
    settings = {name: resolved(name) for name in CONFIGS}
    for section, key, cells in rows:
        for name, cell in cells.items():
            literal = re.fullmatch(r"`(.+)`", cell)
            assert literal, f"{section}.{key} [{name}]: a TOML literal in backticks, got {cell!r}"
            stated = tomllib.loads(f"v = {literal[1]}")["v"]
            actual = value(settings[name], section, key)
            actual = list(actual) if isinstance(actual, tuple) else actual
            assert actual == stated, f"[{section}] {key} of {name}: docs say {stated!r}, it resolves to {actual!r}"


def test_flags_override_the_config_grid_and_fraction():
    s = resolve_bench(
        "paper", "full", CPU, ROOT / "configs" / "paper-text.toml", choices={"scales": (0.5, 1.0), "val_fraction": 0.25}
    )
    assert s.bench.scales == (0.5, 1.0) and s.bench.val_fraction == 0.25
    one = resolve_bench("paper", "full", CPU, choices={"scales": (1.0,)})
    assert one.bench.val_fraction == 0  # one lambda and no lr grid: nothing to choose, nothing held out
    many = resolve_bench("paper", "full", CPU, choices={"scales": (1.0,), "lrs": (1e-5, 1e-4)})
    assert many.bench.val_fraction == 0.2


def test_nothing_held_out_with_something_to_choose_is_one_line():
    with pytest.raises(UsageError, match="--val-fraction 0 holds nothing out"):
        resolve_bench("paper", "full", CPU, choices={"val_fraction": 0.0})
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        BenchConfig(val_fraction=1.0)
    with pytest.raises(UsageError, match="at least one lambda"):
        BenchConfig(scales=())


def test_augmentation_recipes_by_name():
    def steps(recipe):
        return [type(t) for t in recipe.transforms]

    text, code, ours = (augmentation(n, (32, 32)) for n in ("paper-text", "paper-code", "suite"))
    assert v2.RandomResizedCrop not in steps(text)  # the text: flip, grayscale, blur only
    colour = text.transforms[-1].transforms[0].transforms
    assert [type(t) for t in colour] == [v2.Grayscale, v2.GaussianBlur]
    assert code.transforms[0].scale == (0.9, 1.0) and ours.transforms[0].scale == (0.5, 1.0)
    assert augmentation("none", (32, 32)) is None
    image = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    assert all(augmentation(n, (32, 32))(image).shape == image.shape for n in ("paper-text", "paper-code"))
    with pytest.raises(UsageError, match="unknown augmentation 'jitter'"):
        augmentation("jitter", (32, 32))
    with pytest.raises(UsageError, match="unknown augmentation"):
        AlignSettings(augmentation="jitter")


def test_only_the_paper_suite_takes_a_named_augmentation():
    with pytest.raises(UsageError, match="is for --suite paper"):
        build_suite("mini", SuiteRequest(size="micro", augmentation="paper-text"))


def test_precision_is_selectable():
    assert AlignSettings().precision == "auto" and not bf16(CPU, "auto") and bf16(torch.device("cuda"), "auto")
    assert bf16(CPU, "bf16") and not bf16(torch.device("cuda"), "fp32")
    with autocast_for(CPU, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_for(CPU, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(UsageError, match="unknown precision"):
        AlignSettings(precision="fp16")


def test_align_outside_bench_defaults_to_the_papers_values(tmp_path):
    suite = PaperSuite(SuiteRequest(data_root=tmp_path))
    align = AlignSettings(**suite.settings("align"))
    assert (align.lr, align.batch_size, align.steps, align.augment, align.alpha) == (1e-5, 128, 100, 10, 1.0)
    assert suite.settings("fewshot_ft")["lr"] == 1e-5 and suite.settings("fewshot_ft")["steps"] == 100


def test_align_suite_paper_runs_with_the_papers_values_and_named_recipes(align_setup, monkeypatch):
    tmp_path, common, _ = align_setup
    import orthoxfer.data.fewshot as fewshot

    recipes = []
    real = fewshot.augmentation
    monkeypatch.setattr(fewshot, "augmentation", lambda name, size: recipes.append(name) or real(name, size))
    args = [*common, "--method", "penalty", "--augmentation", "paper-text", "--precision", "fp32"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["lr"], config["alpha"], config["augment"], config["steps"]) == (1e-5, 1.0, 10, 3)  # --steps 3
    assert (config["augmentation"], config["precision"]) == ("paper-text", "fp32") and recipes == ["paper-text"]


def test_reference_gelu_builds_a_quickgelu_checkpoint_with_gelu():
    from open_clip.transformer import QuickGELU

    from orthoxfer.models.loading import load_model, register_arch
    from orthoxfer.models.small import small_config

    register_arch("orthoxfer-test-tiny-quickgelu", {**small_config(layers=1), "quick_gelu": True})
    trained = load_model("orthoxfer-test-tiny-quickgelu:none")
    buggy = load_model("orthoxfer-test-tiny-quickgelu:none", force_gelu=True)
    assert trained.quick_gelu and any(isinstance(m, QuickGELU) for m in trained.model.modules())
    assert not buggy.quick_gelu and not any(isinstance(m, QuickGELU) for m in buggy.model.modules())
    assert any(isinstance(m, torch.nn.GELU) for m in buggy.model.modules())
    images = torch.randn(2, 3, *trained.image_size)
    with torch.no_grad():  # the same weights, another function: what every row of the code's Table 1 ran on
        assert not torch.allclose(trained.model.encode_image(images), buggy.model.encode_image(images))


def test_reference_gelu_reaches_the_target_only(tmp_path, monkeypatch):
    import orthoxfer.suites.paper as paper

    loads = []

    def recorded(spec, cache_dir=None, device="cpu", force_gelu=False):
        loads.append((spec, force_gelu))
        if len(loads) == 2:
            raise UsageError("stop here")
        return None

    monkeypatch.setattr(paper, "load_model", recorded)
    args = ["bench", "--suite", "paper", "--source", "S:x", "--target", "T:y", "--data-root", str(tmp_path)]
    args += ["--vectors", str(tmp_path / "v"), "--out", str(tmp_path / "run"), "--reference-gelu"]
    result = CliRunner().invoke(app, args)
    assert result.output.strip() == "error: stop here" and loads == [("S:x", False), ("T:y", True)]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["reference_gelu"] is True
    mini = CliRunner().invoke(app, ["bench", "--suite", "mini", "--reference-gelu", "--out", str(tmp_path / "m")])
    assert mini.exit_code == 2 and "--reference-gelu is for --suite paper" in mini.output


def test_reference_lora_sum_redraws_the_start_and_keeps_the_cross_terms(tiny):
    from orthoxfer.fit.finetune import FinetuneSettings, finetune
    from orthoxfer.problem.tasks import FewShotTask
    from orthoxfer.vectors.reference import initial_a, reference_lora_sum

    size = tiny.visual.image_size
    size = size if isinstance(size, int) else size[0]
    task = FewShotTask(
        "t",
        torch.randint(0, 255, (4, 3, size, size), dtype=torch.uint8),
        torch.tensor([0, 1, 0, 1]),
        torch.nn.Linear(tiny.visual.output_dim, 2),
    )
    unmoved = finetune(tiny, {"t": task}, FinetuneSettings(kind="lora", rank=2, steps=1, lr=0.0, batch_size=4))
    start = initial_a(unmoved)  # the start A redrawn from the seed is the one fine-tuning began at
    assert all(torch.equal(unmoved.lora[s][0], start[i]) for i, s in enumerate(unmoved.sites))

    g = torch.Generator().manual_seed(1)

    def moved(name):
        lora = {
            s: (start[i] + 0.1 * torch.randn(start[i].shape, generator=g), torch.randn(a.shape[1], 2, generator=g))
            for i, (s, (a, _)) in enumerate(unmoved.lora.items())
        }
        return TaskVector(lora=lora, scale=2.0, meta={**unmoved.meta, "tasks": [name]})

    v1, v2 = moved("a"), moved("b")
    buggy, exact = reference_lora_sum([v1, v2]), v1 + v2
    site = v1.sites[0]
    (a1, b1), (a2, b2), a0 = v1.lora[site], v2.lora[site], start[0]
    torch.testing.assert_close(buggy.delta(site), 2.0 * (b1 + b2) @ (a0 + (a1 - a0) + (a2 - a0)))
    cross = 2.0 * (b1 @ (a2 - a0) + b2 @ (a1 - a0))  # what the code adds beyond the sum of the two updates
    torch.testing.assert_close(buggy.delta(site) - exact.delta(site), cross, atol=1e-5, rtol=1e-4)
    assert cross.norm() > 0.01 * exact.delta(site).norm()
    with pytest.raises(UsageError, match="use --mode joint"):
        BenchConfig(mode="per-task", reference_lora_sum=True)
