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
from orthoxfer.cli.study_widths import study_widths_command
from orthoxfer.cli.transfer import transfer_command
from orthoxfer.cli.vector import apply_command, vector_app
from orthoxfer.errors import UsageError
from orthoxfer.version import __version__

# `orthoxfer --help` lists the commands in these panels, in this order
TRANSFER, EVALUATE, BENCHMARK, MODELS = "Transfer", "Evaluate", "Benchmark and study", "Models and data"
SPREADS = ("align", "bench", "study")  # the commands that share their work across the processes of a torchrun launch


def version_command() -> None:
    """Print the orthoxfer version."""
    typer.echo(__version__)


@reports_errors
def main_callback(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Also show per-epoch validation lines and the warnings of torch, open_clip and other libraries.",
        ),
    ] = False,
) -> None:
    """Library warnings shown only with --verbose; under torchrun, the commands that do not share their work refused (every process would do all of it)."""
    from orthoxfer.fit.distributed import launched
    from orthoxfer.terminal import set_verbose

    set_verbose(verbose)
    ctx.with_resource(library_warnings(shown=verbose))
    if launched() and ctx.invoked_subcommand not in SPREADS:
        raise UsageError(
            f"`orthoxfer {ctx.invoked_subcommand}` runs in one process; "
            f"under torchrun use {', '.join(SPREADS[:-1])} or {SPREADS[-1]}"
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
    for name, command, panel in (
        ("align", with_strategy_options(align_command, transfers=True), TRANSFER),
        ("transfer", with_strategy_options(transfer_command, transfers=True, strategies=False), TRANSFER),
        ("diagnose", diagnose_command, TRANSFER),
        ("eval", eval_command, EVALUATE),
        ("relate", relate_command, EVALUATE),
        ("demo", demo_command, BENCHMARK),
        ("bench", with_strategy_options(bench_command, transfers=True), BENCHMARK),
        ("study", with_strategy_options(study_command, transfers=True), BENCHMARK),
        ("study-widths", study_widths_command, BENCHMARK),
        ("bench-speed", bench_speed_command, BENCHMARK),
        ("finetune", finetune_command, MODELS),
        ("inspect", inspect_command, MODELS),
        ("apply", apply_command, MODELS),
        ("version", version_command, MODELS),
    ):
        app.command(name, rich_help_panel=panel)(command)
    app.add_typer(baseline_app, name="baseline", rich_help_panel=EVALUATE)
    app.add_typer(vector_app, name="vector", rich_help_panel=MODELS)
    app.add_typer(mini_app, name="mini", rich_help_panel=MODELS)
    app.add_typer(data_app, name="data", rich_help_panel=MODELS)
    return app


app = build_app()
