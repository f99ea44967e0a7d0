"""A run: one invocation's output folder (config, artifacts, metrics, checkpoints, plots).

A folder that already holds a run is never silently reused: the caller chooses
``overwrite`` (start afresh) or ``resume`` (continue from its checkpoints).

Under torchrun every process opens the same run and reads it (checkpoints to resume
from, finished rows), but only rank 0 writes (:attr:`Run.writes`); a process that
solves problems of its own holds their writes for rank 0 (:meth:`Run.holding`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthoxfer.artifacts import save_artifact, write_json, write_text
from orthoxfer.errors import UsageError
from orthoxfer.fit import distributed
from orthoxfer.fit.checkpoint import KIND as CHECKPOINT
from orthoxfer.fit.checkpoint import checkpoint_payload
from orthoxfer.version import code_version

CONFIG = "config.json"
# settings that change how a run goes, not what it computes: a resume may change them
HOW_NOT_WHAT = frozenset({"resume", "compile", "log_every", "checkpoint_every"})


@dataclass
class Held:
    """Writes made while holding, in order, for rank 0 to make: method calls, and the latest checkpoint per file."""

    calls: list[tuple[str, tuple]] = field(default_factory=list)
    checkpoints: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = field(default_factory=dict)


class Run:
    def __init__(self, path: Path | str, overwrite: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        self.resume = resume
        self.writes = distributed.ranks().main
        self._held: Held | None = None
        overwrite = self._check(overwrite)
        distributed.barrier()  # every process has looked at the folder before rank 0 changes it
        if self.writes:
            if overwrite:
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
        distributed.barrier()

    def _check(self, overwrite: bool) -> bool:
        """Refuse a folder that holds a run unless told what to do with it; returns whether to clear it."""
        if not (self.path.exists() and any(self.path.iterdir())):
            return False
        if overwrite and self.resume:
            raise UsageError("choose one of --overwrite and --resume")
        if not (overwrite or self.resume):
            raise UsageError(
                f"{self.path} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        return overwrite

    @contextmanager
    def holding(self) -> Iterator[Held]:
        """On a process other than rank 0, keep what is written meanwhile instead of dropping it (rank 0 writes live)."""
        held = Held()
        self._held = None if self.writes else held
        try:
            yield held
        finally:
            self._held = None

    def replay(self, held: Held) -> None:
        """Make another process's held writes, in the order it made them (rank 0 only)."""
        if not self.writes:
            return
        for method, args in held.calls:
            getattr(self, method)(*args)
        for name, (tensors, meta) in held.checkpoints.items():
            self._save_checkpoint(name, tensors, meta)

    def _hold(self, method: str, *args: Any) -> bool:
        """Whether this process leaves the write to rank 0 (held for it, or dropped as rank 0 makes the same one)."""
        if self._held is not None:
            self._held.calls.append((method, args))
        return not self.writes

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any], allow_code_change: bool = False) -> dict[str, Any]:
        """Record the resolved settings and the code version, and return that record; a resumed run must have been
        started with the same ones.

        A resume under other code is refused unless ``allow_code_change``: its rows would
        mix two versions. Allowed, the original code stays recorded and the new one is
        appended to ``resumed_with``, so the mixture is visible.
        """
        config = {**config, "code": code_version()}
        before = self.stored_config(config)
        if before is not None:
            if before.get("code") != config["code"]:
                if not allow_code_change:
                    raise UsageError(
                        f"cannot resume {self.path}: it was made by other code ({before.get('code', 'unrecorded')}, "
                        f"now {config['code']}); --overwrite to recompute it as one version, or --allow-code-change"
                    )
                config["resumed_with"] = [*before.get("resumed_with", []), config["code"]]
                config["code"] = before.get("code")
            elif "resumed_with" in before:
                config["resumed_with"] = before["resumed_with"]
        if self.writes:
            write_json(self.file(CONFIG), config)
        return config

    def stored_config(
        self, config: dict[str, Any], remedy: str = "use the same settings or --overwrite"
    ) -> dict[str, Any] | None:
        """The config.json a resumed run was started with (None for a new run), refused if its settings differ from
        ``config``'s (the error ends with ``remedy``): what the code version of a row, or of a summary of stored
        rows, is read against."""
        path = self.file(CONFIG)
        if not (self.resume and path.exists()):
            return None
        before: dict[str, Any] = json.loads(path.read_text())
        ignored = HOW_NOT_WHAT | {"code", "resumed_with"}
        changed = sorted(k for k in set(before) | set(config) if before.get(k) != config.get(k) and k not in ignored)
        if changed:
            raise UsageError(
                f"cannot resume {self.path}: settings differ from the original run ({', '.join(changed)}); {remedy}"
            )
        return before

    def log(self, record: dict[str, Any], name: str = "metrics.jsonl") -> None:
        """Append one JSON line; a line is written whole or not at all before a crash matters."""
        if self._hold("log", record, name):
            return
        with self.file(name).open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_log(self, name: str, scope: str, step: int) -> None:
        """Drop lines of ``scope`` logged after ``step``, the checkpoint a run resumes from, so each step appears once."""
        path = self.file(name)
        if self._hold("truncate_log", name, scope, step) or not path.exists():
            return
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        keep = [json.dumps(r, sort_keys=True) for r in records if not (r["scope"] == scope and r["step"] > step)]
        write_text(path, "".join(line + "\n" for line in keep))

    def save_checkpoint(
        self,
        name: str,
        module: nn.Module,
        optimiser: torch.optim.Optimizer,
        step: int,
        meta: dict[str, Any],
        extra: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """The training state after ``step`` (see :mod:`orthoxfer.fit.checkpoint`); held as a copy, the latest per file."""
        if self._held is not None:
            tensors, header = checkpoint_payload(module, optimiser, step, meta, extra)
            self._held.checkpoints[name] = ({k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}, header)
        elif self.writes:
            self._save_checkpoint(name, *checkpoint_payload(module, optimiser, step, meta, extra))

    def _save_checkpoint(self, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        save_artifact(self.file(name), CHECKPOINT, tensors, meta)
