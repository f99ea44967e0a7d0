"""The package version and the digest of its source, in a module of its own so any module can read them cheaply.

The version alone does not tell two states of the code apart between releases: a study
resumed after a change would silently mix rows computed by two versions. The digest of
every ``.py`` file of the package does.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"


@functools.cache
def source_digest() -> str:
    """A hash of the package's Python sources (paths and bytes), computed once per process."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def code_version() -> dict[str, str]:
    """What a run records of the code that made it."""
    return {"version": __version__, "source": source_digest()}
