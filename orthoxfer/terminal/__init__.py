"""Terminal output that reads the same in a terminal, a log file and CI.

Three jobs, one module each: the consoles every command prints through (data is never
read as markup or emoji; 80 columns when the output is not a terminal), progress that
is a live bar in a terminal and plain lines elsewhere, and tables that split their
columns to fit the width instead of cutting cells.
"""

from orthoxfer.terminal.consoles import err, is_verbose, out, set_quiet, set_verbose
from orthoxfer.terminal.grid import Grid
from orthoxfer.terminal.progress import stage_progress

__all__ = ["Grid", "err", "is_verbose", "out", "set_quiet", "set_verbose", "stage_progress"]
