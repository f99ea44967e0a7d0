"""Every setting of an alignment run, validated once, readable from a TOML file.

The fields below are what every strategy shares (budget, data, mode, ties, device).
What only some strategies read (``penalty``'s weight, ``riemannian``'s retraction, the
low-rank family of the trained ones) is declared by those strategies as
:class:`~orthoxfer.strategies.options.Option` s and held in ``options``; it reads like
a field (``settings.alpha``), is accepted by the constructor, TOML files and the CLI,
and is flattened into :meth:`AlignSettings.to_dict`, so saved artifacts list every
setting by name as they always have.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from orthoxfer._toml import tomllib
from orthoxfer.errors import UsageError
from orthoxfer.strategies.registry import declared_options, strategy_class

CHOICES = {
    # joint: one U set for the summed vectors (the released code); per-task: one U set per task, each task its own
    # model; per-task-summed: one U set per task, the carried vectors summed into one model (the paper's Sec. 4.2)
    "mode": ("joint", "per-task", "per-task-summed"),
    "tie": ("site", "block", "model"),
    # the few-shot pools' augmentation (orthoxfer.data.fewshot.AUGMENTATIONS): suite = the suite's own
    "augmentation": ("suite", "orthoxfer", "paper-text", "paper-code", "none"),
    # auto: bf16 autocast on CUDA, float32 elsewhere; fp32: W + U^T dW U and the forward in float32 everywhere;
    # bf16: bf16 autocast on any device (so a CPU run can show what a GPU run rounds away)
    "precision": ("auto", "fp32", "bf16"),
}
NON_NEGATIVE = ("lr", "weight_decay", "steps", "warmup", "clip", "log_every", "checkpoint_every", "shots", "augment")
POSITIVE = ("batch_size",)


@dataclass(init=False)
class AlignSettings:
    method: str = "penalty"
    # lr, steps, warmup and batch_size are generic defaults for a problem of unknown size, NOT the paper's (lr 1e-5,
    # batch 128; see docs/paper-protocol.md): `--suite paper` and `--suite mini` start from their own tables
    lr: float = 1e-3
    weight_decay: float = 0.0  # AdamW decay pulls U toward 0, away from I: off unless asked for (the paper: 0.1)
    steps: int = 100
    warmup: int = 10
    clip: float = 1.0
    batch_size: int = 32
    scale: float = 1.0  # lambda: the target carries scale * U^T dW U
    mode: str = "joint"
    init: str = "identity"  # identity | procrustes | a transfer method, composed (see orthoxfer.alignment.start)
    seed: int = 0
    tie: str = "site"
    sites: str = "attn"
    shots: int = 100
    augment: int = 10  # copies of each few-shot image per epoch; 0 or 1 = no augmentation
    log_every: int = 10  # a logged step syncs host and device (loss, orthogonality error in full)
    checkpoint_every: int = 50
    device: str = "cpu"
    compile: bool = False  # torch.compile the target's forward (pays on GPU; see ImageEncoder)
    augmentation: str = "suite"  # the few-shot pools' augmentation recipe, by name (CHOICES)
    precision: str = "auto"  # where W + U^T dW U is materialised and the forward runs (CHOICES; fit/align_step.py)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (model names, suite)
    options: dict[str, Any] = field(default_factory=dict)  # every declared strategy option, defaults filled in

    def __init__(self, **values: Any) -> None:
        declared = declared_options()
        options = dict(values.pop("options", {}))
        for f in fields(self):
            if f.name == "options":
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(self, f.name, values.pop(f.name, default))
        for name, value in values.items():
            if name not in declared:
                raise UsageError(f"unknown setting {name!r}; known: {', '.join(sorted(setting_types(AlignSettings)))}")
            options[name] = value
        unknown = set(options) - set(declared)
        if unknown:
            raise UsageError(f"unknown setting {sorted(unknown)[0]!r}; no registered strategy declares it")
        self.options = {name: o.check(options.get(name, o.default)) for name, o in declared.items()}
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        """A declared option reads like a field (only called when no field has the name)."""
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!s} has no setting {name!r}")

    def __post_init__(self) -> None:
        from orthoxfer.alignment.start import check_init  # it reads the transfer registry, which imports strategies

        strategy_class(self.method)
        check_init(self.init)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UsageError(
                    f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; choose one of {', '.join(allowed)}"
                )
        for name in NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, options flattened in (what artifacts and run folders record)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**out, "extra": dict(self.extra), **self.options}

    def replace(self, **changes: Any) -> AlignSettings:
        return AlignSettings(**{**self.to_dict(), **changes})


def setting_types(schema: type) -> dict[str, type]:
    """The keys a settings class accepts and the type of each (for AlignSettings: fields and declared options)."""
    plain = {f.name: f.type for f in fields(schema) if f.name not in ("extra", "options")}
    defaults = {name: type(getattr(schema(), name)) for name in plain}
    if schema is AlignSettings:
        defaults.update({name: o.type for name, o in declared_options().items()})
    return defaults


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
    known = setting_types(schema)
    for key, value in data.items():
        if key not in known:
            raise UsageError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        expected = known[key]
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        ok = ok or (expected is float and is_number) or (expected is tuple and isinstance(value, list))
        if not ok:
            raise UsageError(f"{where}: key {key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
