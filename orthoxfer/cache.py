"""Where orthoxfer caches what it makes once (pre-trained mini models, source vectors, zero-shot heads)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$ORTHOXFER_CACHE`` if set, else ``$XDG_CACHE_HOME/orthoxfer``, else ``~/.cache/orthoxfer``."""
    if os.environ.get("ORTHOXFER_CACHE"):
        return Path(os.environ["ORTHOXFER_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orthoxfer"
