"""Where orthoxfer caches what it makes once (pre-trained mini models, source vectors, zero-shot heads)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(override: Path | str | None = None) -> Path:
    """``override`` (a run's ``--cache-dir``) if given, else ``$ORTHOXFER_CACHE`` if set, else
    ``$XDG_CACHE_HOME/orthoxfer``, else ``~/.cache/orthoxfer``."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get("ORTHOXFER_CACHE"):
        return Path(os.environ["ORTHOXFER_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orthoxfer"
