"""Safetensors artifacts with JSON metadata, written atomically.

Every orthoxfer artifact (task vector, alignment, checkpoint) is one safetensors
file whose header carries one key, ``orthoxfer``: a JSON document with the
artifact's kind, the orthoxfer version and its metadata. One key, because
safetensors writes several in an arbitrary order, and two runs with the same seed
must write the same bytes. Nothing is ever unpickled, and a file is only visible
under its final name once it has been written completely.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from orthoxfer.errors import OrthoxferError
from orthoxfer.version import __version__


class ArtifactError(OrthoxferError, ValueError):
    """A file that is missing, unreadable or not the orthoxfer artifact expected."""


def atomic_write(path: Path | str, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` only if it succeeded.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask),
    not the temp file's private 0600: results are often shared.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_artifact(path: Path | str, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    header = {"orthoxfer": json.dumps({"kind": kind, "version": __version__, "meta": meta}, sort_keys=True)}
    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(payload, tmp, metadata=header))


def load_artifact(path: Path | str, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of an artifact of ``kind``, or one clear :class:`ArtifactError`."""
    path = Path(path)
    label = kind.replace("_", " ")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file (expected an orthoxfer {label} .safetensors file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("orthoxfer", "{}"))
            if header.get("kind") != kind:
                found = header.get("kind")
                why = f"it holds an orthoxfer {found.replace('_', ' ')}" if found else "it has no orthoxfer header"
                raise ArtifactError(f"{path} is not a valid orthoxfer {label} file: {why}")
            meta = header["meta"]
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except ArtifactError:
        raise
    except Exception as exc:  # safetensors raises several types for truncation and corruption
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{path} is not a valid orthoxfer {label} file ({reason})") from None
    return tensors, meta
