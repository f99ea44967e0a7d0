"""What orthoxfer prints reads in an 80-column log: no cut cell, no emoji, no markup eaten, no half-drawn bar.

The commands run through CliRunner, whose output is not a terminal: what CI, ``| tee``
and nohup see. ``COLUMNS=80`` is the narrowest width promised.
"""

import io
import re

import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.terminal import Grid
from orthoxfer.terminal.consoles import PlainConsole
from orthoxfer.terminal.progress import PlainProgress, stage_progress

runner = CliRunner()
NARROW = {"COLUMNS": "80"}
METHODS = (
    "target only",
    "target few-shot FT",
    "embed, direct addition",
    "embed, penalty",
    "embed, riemannian",
    "embed, cayley",
    "embed, procrustes",
    "embed, gradfix",
    "embed, orthogonal-shift",
    "embed, transfusion",
    "embed, theseus",
)
STAGE = re.compile(r"^\S.*: \d+(/\d+)?( .*)? \(\d+ s\)$")  # a plain progress line: "name: done/total status (N s)"


def assert_fits(text: str, width: int = 80) -> None:
    for line in text.splitlines():
        assert cell_len(line) <= width, f"{cell_len(line)} columns: {line!r}"
    assert "…" not in text, text
    assert "\r" not in text and "\x1b[" not in text, "a live bar or colour codes in a log"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("terminal")
    args = ["demo", "--size", "micro", "--out", str(root / "demo"), "--cache-dir", str(root / "cache")]
    result = runner.invoke(app, args, env=NARROW)
    assert result.exit_code == 0, result.output
    return root, result


def test_demo_prints_every_name_whole_in_80_columns(demo):
    _, result = demo
    assert_fits(result.output)
    assert "mini:a -> mini:b: top-1 %" in result.output and "🅱" not in result.output
    cells = {c.strip() for line in result.stdout.splitlines() for c in line.split("│")}
    assert set(METHODS) <= cells  # every method name whole in a cell, never `pen…`
    assert {"‖UᵀU−I‖", "norm ratio", "rank kept", "housenumbers"} <= {
        c.strip() for line in result.stdout.splitlines() for c in line.split("┃")
    }


def test_demo_progress_is_whole_lines_and_few_shot_ft_one_line(demo):
    _, result = demo
    stages = [line for line in result.stderr.splitlines() if STAGE.match(line)]
    assert any(line.startswith("finetune [fewshot-ft]: ") and " val " in line for line in stages), result.stderr
    assert "validation accuracy" not in result.output  # per epoch only under --verbose
    for line in stages:  # a stage reports when it ends: done == total
        done, total = re.search(r": (\d+)/(\d+)", line).groups()
        assert done == total, line


def test_bench_with_seeds_and_controls_fits_80_columns(demo):
    root, _ = demo
    args = ["bench", "--suite", "mini", "--size", "micro", "--seeds", "2", "--controls", "spectrum"]
    args += ["--methods", "penalty,transfusion", "--kinds", "embed", "--no-procrustes-init", "--tasks", "scenes,coins"]
    args += ["--out", str(root / "bench"), "--cache-dir", str(root / "cache")]
    result = runner.invoke(app, args, env=NARROW)
    assert result.exit_code == 0, result.output
    assert_fits(result.output)
    assert "±" in result.stdout and "gain vs spectrum" in result.stdout and "mini:b:" in result.stdout


def test_align_and_diagnose_tables_fit_80_columns(demo):
    root, _ = demo
    mini = ["--suite", "mini", "--size", "micro", "--cache-dir", str(root / "cache")]
    out = root / "quick"
    aligned = runner.invoke(
        app,
        ["align", *mini, "--target", "mini:b", "--task-vector", "mini:surfaces", "--method", "procrustes"]
        + ["--source", "mini:a", "--out", str(out)],
        env=NARROW,
    )
    assert aligned.exit_code == 0, aligned.output
    diagnosed = runner.invoke(
        app,
        ["diagnose", "--task-vector", "mini:surfaces", "--alignment", str(out / "alignment.safetensors"), *mini[2:]],
        env=NARROW,
    )
    assert diagnosed.exit_code == 0, diagnosed.output
    assert_fits(diagnosed.stdout)
    assert "visual.transformer.resblocks.0.attn.q" in diagnosed.stdout and "cond(M)" in diagnosed.stdout


def test_verbose_prints_validation_per_epoch(align_setup, tiny_arch):
    tmp_path, _, _ = align_setup
    args = ["--verbose", "finetune", "--model", f"{tiny_arch}:{tmp_path / 'source.safetensors'}"]
    args += ["--task", "eurosat", "--data-root", str(tmp_path / "data"), "--steps", "3", "--warmup", "1"]
    args += ["--batch-size", "4", "--heads-dir", str(tmp_path / "heads"), "--device", "cpu"]
    args += ["--val-fraction", "0.25", "--out", str(tmp_path / "ft")]
    result = runner.invoke(app, args, env=NARROW)
    assert result.exit_code == 0, result.output
    assert "validation accuracy" in result.output


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_a_grid_splits_columns_and_never_cuts_a_cell(width):
    heads = ["method", "housenumbers", "scenes", "pictograms", "coins", "mean", "‖UᵀU−I‖", "gain vs spectrum"]
    row = ["embed, orthogonal-shift", "43.0 ±12.5", "9.1", "63.8 ±1.2", "16.0", "42.4 ±0.3", "2.2e-18", "+0.3 ±0.5"]
    buf = io.StringIO()
    PlainConsole(file=buf, width=width).print(Grid("[joint] mini:a -> mini:b: top-1 %", heads, [row]))
    text = buf.getvalue()
    assert_fits(text, width)
    for cell in [*heads, *row]:
        assert cell in text or width < 60, (cell, text)  # below a key and a value, cells may fold
    if width >= 60:
        assert "[joint] mini:a -> mini:b:" in text


def test_markup_and_emoji_in_data_print_as_they_are():
    buf = io.StringIO()
    console = PlainConsole(file=buf, width=80)
    console.print("finetune [joint] on mini:b: :smile: [bold]x[/]")
    assert buf.getvalue().strip() == "finetune [joint] on mini:b: :smile: [bold]x[/]"


def test_plain_progress_prints_one_line_when_a_stage_ends():
    buf = io.StringIO()
    console = PlainConsole(file=buf, width=80)
    assert isinstance(stage_progress(console=console), PlainProgress)  # not a terminal
    with stage_progress(console=console) as bar:
        job = bar.add_task("penalty [joint]", total=5, status="")
        for k in range(5):
            bar.update(job, completed=k + 1, status=f"loss {1 / (k + 1):.2f}")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and STAGE.match(lines[0]) and lines[0].startswith("penalty [joint]: 5/5 loss 0.20"), lines
