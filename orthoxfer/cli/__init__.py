"""The ``orthoxfer`` command line: thin typer commands over the Python API, one module per command.

Every command turns orthoxfer's own errors into one red line
(:func:`orthoxfer.cli.common.reports_errors`). Commands import most of the library
inside their bodies, so building the app loads only what its flags need (the strategy
registry). :func:`build_app` assembles the app; it reads the registry, so flags of a
strategy registered later appear in an app built after it.
"""

from orthoxfer.cli.common import holding_warnings

with holding_warnings():  # library warnings raised on import: --verbose shows them
    from orthoxfer.cli.app import app, build_app

__all__ = ["app", "build_app"]
