"""The ``orthoxfer`` command line: thin typer commands over the Python API, one module per command.

Every command turns orthoxfer's own errors into one red line
(:func:`orthoxfer.cli.common.reports_errors`). Commands import the library inside
their bodies: a plain ``orthoxfer --help`` then starts without loading torch and
open_clip. :func:`build_app` assembles the app; it reads the strategy registry, so
flags of a strategy registered later appear in an app built after it.
"""

from orthoxfer.cli.app import app, build_app

__all__ = ["app", "build_app"]
