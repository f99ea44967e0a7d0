"""A run: one invocation's output folder (config, artifacts, metrics, checkpoints, plots).

A folder that already holds a run is never silently reused: the caller chooses
``overwrite`` (start afresh) or ``resume`` (continue from its checkpoints).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from orthoxfer.artifacts import write_json
from orthoxfer.errors import UsageError

CONFIG = "config.json"
# settings that change how a run goes, not what it computes: a resume may change them
HOW_NOT_WHAT = frozenset({"resume", "compile", "log_every", "checkpoint_every"})


class Run:
    def __init__(self, path: Path | str, overwrite: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self.resume = resume
        if self.path.exists() and any(self.path.iterdir()):
            if overwrite and resume:
                raise UsageError("choose one of --overwrite and --resume")
            if overwrite:
                shutil.rmtree(self.path)
            elif not resume:
                raise UsageError(f"{self.path} already holds a run; pass --resume to continue it or --overwrite to replace it")
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> None:
        """Record the resolved settings; a resumed run must have been started with the same ones."""
        path = self.file(CONFIG)
        if self.resume and path.exists():
            before = json.loads(path.read_text())
            changed = sorted(k for k in set(before) | set(config) if before.get(k) != config.get(k) and k not in HOW_NOT_WHAT)
            if changed:
                raise UsageError(
                    f"cannot resume {self.path}: settings differ from the original run ({', '.join(changed)}); "
                    "use the same settings or --overwrite"
                )
        write_json(path, config)

    def log(self, record: dict[str, Any], name: str = "metrics.jsonl") -> None:
        """Append one JSON line; a line is written whole or not at all before a crash matters."""
        with self.file(name).open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
