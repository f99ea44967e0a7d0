"""``orthoxfer study-widths`` on synthetic study.json files of known numbers: the gain table against width, the regime's
checks per width, the files and the terminal at 80 columns, and the one-line refusals."""

import json

import pytest
from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.report.statistics import paired, stat
from orthoxfer.report.widths import load_studies, summarise_widths

runner = CliRunner()


def method(real, control, name="spectrum"):
    return {"accuracy": stat(real), "controls": {name: {"accuracy": stat(control), "gain": paired(real, control)}}}


def study(width, shift, ft_gap=0.20, same=True):
    """A two-seed study at ``width``: penalty's gain over its spectrum control is ``shift`` on data and 2 x ``shift``
    on release; transfusion (valid only against orbit) 0.05 on release; few-shot FT ``ft_gap`` over target on data,
    direct addition 0.01 over it; the ceiling 0.80 when the same rung ran."""
    target, ft = [0.20, 0.22], [0.20 + ft_gap, 0.22 + ft_gap]
    data = {
        "rung": "data",
        "baselines": {"target": stat(target), "finetune": stat(ft), "direct": stat([0.21, 0.23])},
        "methods": {"penalty": method([0.40 + shift, 0.42 + shift], [0.40, 0.42])},
    }
    release = {
        "rung": "release",
        "baselines": {},
        "methods": {
            "penalty": method([0.50 + 2 * shift, 0.50 + 2 * shift], [0.50, 0.50]),
            "transfusion": method([0.35, 0.36], [0.30, 0.31], name="orbit"),
            "auto": {"accuracy": stat([0.5, 0.5]), "controls": {}},  # no control: no gain to show
        },
    }
    meta = {"width": width, "tasks": ["cars", "digits"], "seeds": [0, 1], "controls": ["spectrum"]}
    ceiling = {**stat([0.80, 0.80]), "from": "same"} if same else None
    return {"meta": meta, "rungs": [data, release], "ceiling": ceiling}


def write(folder, data):
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps(data))
    return folder


@pytest.fixture
def folders(tmp_path):
    return [
        write(tmp_path / "w256", study(256, 0.06, ft_gap=0.08, same=False)),
        write(tmp_path / "w64", study(64, 0.0)),
        write(tmp_path / "w128", study(128, 0.02)),
    ]


def test_gains_against_width_are_each_studys_own_and_the_regime_is_checked_per_width(folders):
    summary = summarise_widths(load_studies(folders))
    assert summary["meta"]["widths"] == [64, 128, 256]  # sorted, whatever the folders' order
    penalty = summary["rungs"]["data"]["penalty"]
    assert [e["width"] for e in penalty] == [64, 128, 256] and {e["control"] for e in penalty} == {"spectrum"}
    assert [e["gain"]["mean"] for e in penalty] == pytest.approx([0.0, 0.02, 0.06])
    assert [e["gain"]["mean"] for e in summary["rungs"]["release"]["penalty"]] == pytest.approx([0.0, 0.04, 0.12])
    assert [e["control"] for e in summary["rungs"]["release"]["transfusion"]] == ["orbit"] * 3  # its valid control
    assert "auto" not in summary["rungs"]["release"]
    checks = {r["width"]: {c["check"]: c for c in r["checks"]} for r in summary["regime"]}
    assert checks[64]["FT - target >= 10"]["pass"] and checks[64]["FT - target >= 10"]["difference"]["mean"] == (
        pytest.approx(0.20)
    )
    assert checks[256]["FT - target >= 10"]["pass"] is False  # 8 points
    assert all(checks[w]["|direct - target| <= 1.5"]["pass"] for w in (64, 128, 256))  # 1 point
    assert checks[128]["ceiling - FT >= 10"]["difference"]["mean"] == pytest.approx(0.80 - 0.41)
    assert (
        checks[256]["ceiling - FT >= 10"]["pass"] is None
        and "same rung" in checks[256]["ceiling - FT >= 10"]["missing"]
    )


def test_the_command_prints_fitting_tables_and_writes_its_files(folders, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["study-widths", *map(str, folders), "--out", str(out)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 80 for line in result.output.splitlines() if not line.startswith("  /"))
    assert "data: gain over the spectrum control, points" in result.output
    assert "+6.0 ± 0.0" in result.output and "FAIL" in result.output and "n/a" in result.output
    for name in ("widths.json", "widths.md", "gain_vs_width.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "widths.json").read_text())["meta"]["widths"] == [64, 128, 256]
    md = (out / "widths.md").read_text()
    assert "| penalty | +0.0 ± 0.0 | +2.0 ± 0.0 | +6.0 ± 0.0 |" in md
    assert "| method | control | width 64 | width 128 | width 256 |" in md  # release: spectrum and orbit
    assert "| transfusion | orbit | +5.0 ± 0.0 | +5.0 ± 0.0 | +5.0 ± 0.0 |" in md
    assert "| width | FT - target >= 10 | \\|direct - target\\| <= 1.5 | ceiling - FT >= 10 |" in md
    assert "| 256 | +8.0 ± 0.0 FAIL | +1.0 ± 0.0 pass | n/a |" in md


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "no study.json in"),
        ("same width", "are both width 128: give one study folder per width"),
        ("no width", "records no width"),
        ("not json", "is not a study summary"),
        ("not a summary", "is not a study summary (no meta or rungs)"),
    ],
)
def test_bad_folders_are_refused_in_one_line(tmp_path, case, message):
    first = write(tmp_path / "a", study(128, 0.0))
    if case == "empty":
        second = tmp_path / "b"
        second.mkdir()
    elif case == "same width":
        second = write(tmp_path / "b", study(128, 0.01))
    elif case == "not json":
        second = tmp_path / "b"
        second.mkdir()
        (second / "study.json").write_text('{"meta": ')  # cut off
    elif case == "not a summary":
        second = tmp_path / "b"
        second.mkdir()
        (second / "study.json").write_text("[1, 2]")  # JSON, but not what study writes
    else:
        data = study(64, 0.0)
        del data["meta"]["width"]
        second = write(tmp_path / "b", data)
    result = runner.invoke(app, ["study-widths", str(first), str(second), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out").exists()
