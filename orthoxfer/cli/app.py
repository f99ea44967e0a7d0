"""The typer app: every command registered under its name, strategy flags generated from the registry."""

from __future__ import annotations

from typing import Annotated

import typer

from orthoxfer.cli.align import align_command
from orthoxfer.cli.baseline import baseline_app
from orthoxfer.cli.bench import bench_command, demo_command
from orthoxfer.cli.bench_speed import bench_speed_command
from orthoxfer.cli.common import library_warnings, reports_errors
from orthoxfer.cli.data import data_app
from orthoxfer.cli.diagnose import diagnose_command
from orthoxfer.cli.evaluate import eval_command
from orthoxfer.cli.finetune import finetune_command
from orthoxfer.cli.inspect import inspect_command
from orthoxfer.cli.mini import mini_app
from orthoxfer.cli.relate import relate_command
from orthoxfer.cli.strategy_options import with_strategy_options
from orthoxfer.cli.study import study_command
from orthoxfer.cli.transfer import transfer_command
from orthoxfer.cli.vector import apply_command, vector_app
from orthoxfer.errors import UsageError
from orthoxfer.version import __version__

SPREADS = ("align", "bench")  # the commands that share their work across the processes of a torchrun launch


def version_command() -> None:
    """Print the orthoxfer version."""
    typer.echo(__version__)


@reports_errors
def main_callback(
    ctx: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the warnings of torch, open_clip and other libraries.")
    ] = False,
) -> None:
    """Library warnings shown only with --verbose; under torchrun, the commands that do not share their work refused (every process would do all of it)."""
    from orthoxfer.fit.distributed import launched

    ctx.with_resource(library_warnings(shown=verbose))
    if launched() and ctx.invoked_subcommand not in SPREADS:
        raise UsageError(
            f"`orthoxfer {ctx.invoked_subcommand}` runs in one process; under torchrun use {' or '.join(SPREADS)}"
        )


def build_app() -> typer.Typer:
    """The ``orthoxfer`` app, with a flag for every option the registered strategies declare now."""
    app = typer.Typer(
        name="orthoxfer",
        help="Carry task vectors between independently pre-trained models with orthogonal similarity transforms.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(main_callback)
    app.add_typer(data_app, name="data")
    app.add_typer(baseline_app, name="baseline")
    app.add_typer(vector_app, name="vector")
    app.add_typer(mini_app, name="mini")
    app.command("eval")(eval_command)
    app.command("align")(with_strategy_options(align_command, transfers=True))
    app.command("transfer")(with_strategy_options(transfer_command, transfers=True, strategies=False))
    app.command("finetune")(finetune_command)
    app.command("bench")(with_strategy_options(bench_command, transfers=True))
    app.command("demo")(demo_command)
    app.command("study")(with_strategy_options(study_command, transfers=True))
    app.command("bench-speed")(bench_speed_command)
    app.command("relate")(relate_command)
    app.command("apply")(apply_command)
    app.command("version")(version_command)
    app.command("inspect")(inspect_command)
    app.command("diagnose")(diagnose_command)
    return app


app = build_app()
