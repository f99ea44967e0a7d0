"""Every shell block of README.md and of docs/quick-start.md runs as written, or says why not.

A newcomer copies these blocks first, so a renamed flag must fail here, not on their
machine. The line before each fenced block may say how the test runs it:

- ``<!-- readme-test: micro -->``: every command with ``--size micro`` added (the same
  commands on the mini suite's smallest models: seconds, not minutes);
- ``<!-- readme-test: skip: REASON -->``: not run, for the reason given (a network, the
  paper's datasets, minutes of CPU);
- nothing: run exactly as written.

Commands run through the typer app in a fresh folder with a fresh cache
(``ORTHOXFER_CACHE``), one block per test, each command after the ones before it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orthoxfer.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/quick-start.md")
FENCE = re.compile(r"^```(bash|sh|shell)\s*$")
MARK = re.compile(r"^<!-- readme-test: (micro|skip: (?P<reason>.+)) -->$")
MAX_README_LINES = 300


@dataclass
class Block:
    page: str
    line: int
    text: str
    micro: bool
    skip: str | None

    @property
    def commands(self) -> list[list[str]]:
        """Each command of the block as argv: continuation lines joined, comments dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def blocks(page: str) -> list[Block]:
    lines = (ROOT / page).read_text().splitlines()
    found, k = [], 0
    while k < len(lines):
        if FENCE.match(lines[k]):
            end = next(j for j in range(k + 1, len(lines)) if lines[j].startswith("```"))
            mark = MARK.match(lines[k - 1]) if k else None
            skip = mark.group("reason") if mark and mark.group("reason") else None
            found.append(Block(page, k + 1, "\n".join(lines[k + 1 : end]), bool(mark) and not skip, skip))
            k = end
        k += 1
    return found


def every_block() -> list[Block]:
    """All blocks; one whose commands equal a block run before it is skipped as run already."""
    seen: dict[str, str] = {}
    out = []
    for page in PAGES:
        for block in blocks(page):
            key = repr(block.commands)
            if block.skip is None and key in seen:
                block.skip = f"the same commands as {seen[key]}, which runs"
            elif block.skip is None:
                seen[key] = f"{block.page}:{block.line}"
            out.append(block)
    return out


BLOCKS = every_block()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_shell_block_runs_as_written(block, tmp_path, monkeypatch):
    if block.skip:
        pytest.skip(block.skip)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for argv in block.commands:
        assert argv[0] == "orthoxfer", f"{block.page}:{block.line}: only orthoxfer commands run here: {argv}"
        args = [*argv[1:], *(["--size", "micro"] if block.micro else [])]
        result = runner.invoke(app, args, env={"ORTHOXFER_CACHE": str(tmp_path / "cache"), "COLUMNS": "80"})
        assert result.exit_code == 0, f"{block.page}:{block.line}: {shlex.join(argv)}\n{result.output}"


def test_every_skipped_block_says_why_and_the_readme_runs_something():
    assert all(b.skip.strip() for b in BLOCKS if b.skip)
    assert any(b.page == "README.md" and not b.skip for b in BLOCKS)


def test_readme_is_short_and_its_set_up_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= MAX_README_LINES
    setup = blocks("README.md")[0].text.splitlines()
    ci = (ROOT / ".ci/run").read_text()
    install = setup[3].split(" && ", 2)[2]  # set-up command 2 after its venv, which .ci/run makes itself
    assert install in ci.splitlines()  # character for character
    assert readme.count("<!-- study-finding -->") == 1 and readme.count("<!-- /study-finding -->") == 1
