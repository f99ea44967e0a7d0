"""The package version and the digest of its source, in a module of its own so any module can read them cheaply.

The version alone does not tell two states of the code apart between releases: a study
resumed after a change would silently mix rows computed by two versions. The digest of
every ``.py`` file of the package that can change a row does: ``report/`` is left out, since
it only reads stored rows, so a summary or a plot can be fixed after a study of hours
without mixing versions or recomputing a row.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"
READS_ROWS = ("report",)  # what only reads stored rows: its changes leave every row as it was


@functools.cache
def source_digest() -> str:
    """The package's :func:`digest_of`, computed once per process."""
    return digest_of(Path(__file__).parent)


def digest_of(root: Path) -> str:
    """A hash of the Python sources under ``root`` (paths and bytes) less ``READS_ROWS``."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if p.relative_to(root).parts[0] not in READS_ROWS):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def code_version() -> dict[str, str]:
    """What a run records of the code that made it."""
    return {"version": __version__, "source": source_digest()}
