"""Every setting of an alignment run, validated once, readable from a TOML file.

One flat record for all strategies keeps the CLI, config files and saved artifacts in
step: a strategy reads the fields it uses (``alpha`` and ``penalty_form`` for
``penalty``, ``retraction`` for ``riemannian``, ``rotation_rank`` for the trained ones)
and the record says which were used.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from orthoxfer.errors import UsageError

CHOICES = {
    "mode": ("joint", "per-task"),
    "init": ("identity", "procrustes"),
    "penalty_form": ("paper", "reference"),
    "retraction": ("qr", "cayley"),
    "tie": ("site", "block", "model"),
}
NON_NEGATIVE = (
    "lr", "weight_decay", "steps", "warmup", "clip", "alpha", "log_every", "checkpoint_every", "shots", "augment",
    "rotation_rank", "procrustes_rtol",
)  # fmt: skip
POSITIVE = ("batch_size",)


@dataclass
class AlignSettings:
    method: str = "penalty"
    lr: float = 1e-3
    weight_decay: float = 0.0  # AdamW decay pulls U toward 0, away from I: off unless asked for
    steps: int = 100
    warmup: int = 10
    clip: float = 1.0
    batch_size: int = 32
    scale: float = 1.0  # lambda: the target carries scale * U^T dW U
    mode: str = "joint"
    init: str = "identity"
    seed: int = 0
    alpha: float = 1.0
    penalty_form: str = "paper"
    retraction: str = "qr"
    tie: str = "site"
    rotation_rank: int = 0  # 0: a full U; k > 0: U moves away from its start only inside a rank-k family
    procrustes_rtol: float = 1e-6  # singular values of M at or below this times the largest leave U free there
    sites: str = "attn"
    shots: int = 100
    augment: int = 10  # copies of each few-shot image per epoch; 0 or 1 = no augmentation
    log_every: int = 10  # a logged step syncs host and device (loss, orthogonality error in full)
    checkpoint_every: int = 50
    device: str = "cpu"
    compile: bool = False  # torch.compile the target's forward (pays on GPU; see ImageEncoder)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (model names, suite)

    def __post_init__(self) -> None:
        from orthoxfer.align import STRATEGIES  # the registry lives with the strategies

        if self.method not in STRATEGIES:
            raise UsageError(f"unknown method {self.method!r}; choose one of {', '.join(STRATEGIES)}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> AlignSettings:
        return dataclasses.replace(self, **changes)


def rotation_rank(settings: AlignSettings, dim: int) -> int:
    """``settings.rotation_rank`` once checked against the width ``dim`` of the sites it rotates."""
    k = settings.rotation_rank
    if k >= dim:
        raise UsageError(f"--rotation-rank {k} must be < {dim}, the width of the sites; pass a smaller rank, or 0 for a full U")
    return k


def read_config(path: Path | str, section: str | None = None, schema: type = AlignSettings) -> dict[str, Any]:
    """Settings from a TOML file (data only, never executed), checked key by key against ``schema``.

    ``section`` picks a table (e.g. ``align`` in a multi-stage config); keys of other
    tables are ignored there, unknown keys inside the section are refused.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    if section is not None:
        data = data.get(section, {})
    where = f"config file {path}" + (f", [{section}]" if section else "")
    known = {f.name for f in fields(schema)} - {"extra"}
    defaults = schema()
    for key, value in data.items():
        if key not in known:
            raise UsageError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        expected = type(getattr(defaults, key))
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        ok = ok or (expected is float and is_number) or (expected is tuple and isinstance(value, list))
        if not ok:
            raise UsageError(f"{where}: key {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
