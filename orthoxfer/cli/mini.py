"""``orthoxfer mini pretrain``: pre-train the mini suite's models and write them as the package's shipped weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from orthoxfer.cli.common import comma_list, console, reports_errors
from orthoxfer.errors import UsageError

mini_app = typer.Typer(help="The offline mini suite's models.", no_args_is_help=True)


@mini_app.command("pretrain")
@reports_errors
def pretrain_command(
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated: a, b, seed, release (the ladder's models).")
    ] = "a,b,seed,release",
    size: Annotated[str, typer.Option("--size", help="full (the demo's) | micro (tests).")] = "full",
    width: Annotated[
        int | None,
        typer.Option(
            "--width",
            help="The image tower's width, everything else of the recipe equal (heads of the same width, more of "
            "them); default the size's own, 128 at full size (the shipped models').",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the shipped files (default: inside the installed package, where demo and bench look).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Cache of the full models (and of a resumable pre-training's checkpoints)."),
    ] = None,
) -> None:
    """Pre-train (or take from the cache) the demo's seed-0 mini models and write their image towers with the recipe hash.

    demo and bench --suite mini load a shipped file wherever its recipe hash matches their
    config, and otherwise pre-train and say so. Pre-training never reads a shipped file
    here: each model is made from its recipe. An interrupted run resumes where it stopped.
    A width other than 128 is a recipe of its own (its hash, its cache folder, its files
    model_<which>_w<width>.safetensors): study --width uses it.
    """
    from orthoxfer.models.pretrain import check_which, pretrained_model, recipe
    from orthoxfer.models.shipped import write_shipped
    from orthoxfer.suites.base import SuiteRequest
    from orthoxfer.suites.mini import SIZES, pretrain_config

    if size not in SIZES:
        raise UsageError(f"unknown size {size!r}; use {' or '.join(SIZES)}")
    config = pretrain_config(SuiteRequest(size=size, seed=0, width=width))
    names = comma_list(models) or ()
    for which in names:
        recipe(config, which)  # every name checked before minutes are spent
    for which in names:
        model = pretrained_model(check_which(which), config, cache_dir, shipped=False)
        path = write_shipped(
            which,
            config.width,
            model,
            config.recipe_hash(),
            {"config": dataclasses.asdict(config), "key": config.key()},
            out,
        )
        console.print(f"mini model {which}: shipped as {path} (recipe {config.recipe_hash()})")
