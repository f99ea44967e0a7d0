"""The one place figures are made and written: a headless pyplot, and PNGs written atomically.

matplotlib is imported on first use only: it costs about a second, and most commands
draw nothing.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from orthoxfer.artifacts import atomic_write


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path | str, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG (temp file + rename) and free it."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    pyplot().close(fig)
