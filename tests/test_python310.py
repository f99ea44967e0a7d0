"""pyproject.toml promises Python 3.10, which has no ``tomllib``: the package must import and read TOML there."""

import subprocess
import sys
import textwrap

# Imports the modules that read TOML once as usual (so torch and the rest are loaded under the real Python),
# then again from scratch as Python 3.10 would: no tomllib, and tomli (here the same module) installed instead.
SCRIPT = textwrap.dedent(
    """
    import sys, tomllib
    import orthoxfer.cli.align, orthoxfer.strategies.settings, orthoxfer.suites.paper
    for name in [m for m in sys.modules if m == "orthoxfer" or m.startswith("orthoxfer.")]:
        del sys.modules[name]
    sys.modules["tomli"], sys.modules["tomllib"] = tomllib, None
    sys.version_info = (3, 10, 14, "final", 0)
    import orthoxfer.cli.align, orthoxfer.strategies.settings, orthoxfer.suites.paper
    from pathlib import Path
    path = Path(sys.argv[1])
    path.write_text("[align]\\nsteps = 3\\n")
    assert orthoxfer.cli.align._has_section(path)
    print(orthoxfer.strategies.settings.read_config(path, section="align"))
    """
)


def test_imports_and_reads_toml_without_tomllib_as_on_python_310(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "align.toml")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'steps': 3" in done.stdout
