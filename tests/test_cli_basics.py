import json
import subprocess
import sys

from typer.testing import CliRunner

from orthoxfer.cli import app
from orthoxfer.vectors.taskvector import TaskVector
from orthoxfer.version import __version__

runner = CliRunner()


def test_help_and_version():
    assert "inspect" in runner.invoke(app, ["--help"]).output
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_inspect_table_and_json(tmp_path, tiny_pair):
    base, tuned = tiny_pair
    path = tmp_path / "tv.safetensors"
    TaskVector.from_models(base, tuned, "attn", meta={"tasks": ["digits"]}).save(path)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "visual.transformer.resblocks.1.attn.out" in result.output and "total: 8 sites" in result.output
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    data = json.loads(result.output)
    assert len(data["sites"]) == 8 and data["sites"][0]["rank"] == 32 and data["meta"]["tasks"] == ["digits"]


def test_inspect_corrupt_file_is_one_line_exit_1(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert "not a valid orthoxfer task vector file" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_the_cli_starts_without_the_dataset_and_model_libraries():
    # `orthoxfer --help` and every usage error should not wait seconds for torchvision and open_clip to import
    code = "import sys, orthoxfer.cli.app; print(sorted(m for m in ('torchvision', 'open_clip', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
