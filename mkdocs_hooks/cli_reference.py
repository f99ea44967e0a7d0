"""mkdocs hook: docs/cli.md's reference written from the typer app itself, each time the site is built.

typer's own generator (`typer.cli.get_docs_for_click`, what `typer MODULE utils docs`
prints) runs in the build's process on the checkout's own `orthoxfer`, so the page
says what `orthoxfer COMMAND --help` says and an error there fails the build, where a
plugin that shells out to `typer` would leave the section empty. (mkdocs-click and
mkdocs-typer2's in-process engine read click's classes, which typer >= 0.29 no longer
uses.)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"


def on_config(config, **kwargs):
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # the checkout's orthoxfer, whatever is installed
    return config


def cli_markdown() -> str:
    import typer
    import typer.cli

    from orthoxfer.cli.app import build_app

    command = typer.main.get_command(build_app())
    with typer.Context(command, info_name="orthoxfer") as ctx:
        text = typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="orthoxfer", title="Every command and flag")
    return re.sub(r"^(#+) ", r"#\1 ", text.strip(), flags=re.MULTILINE)  # below the page's own title


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_markdown())
