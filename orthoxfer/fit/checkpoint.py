"""Checkpoints of a training loop as safetensors + JSON: module state, optimiser state, step.

Optimiser state is split into its tensors (safetensors) and everything else (JSON),
so resuming never unpickles anything and works for any torch or geoopt optimiser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthoxfer.artifacts import load_artifact

KIND = "checkpoint"


def checkpoint_payload(
    module: nn.Module,
    optimiser: torch.optim.Optimizer,
    step: int,
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and header of a checkpoint (written with ``KIND`` by :meth:`orthoxfer.runs.Run.save_checkpoint`).

    ``extra``: entries of the caller's own (the step selection's best state), named apart
    from ``module/`` and ``optim/``. The tensors are the live state, not copies: write them
    before the next step.
    """
    tensors = {**(extra or {}), **{f"module/{k}": v for k, v in module.state_dict().items()}}
    state = optimiser.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, dict(meta, step=step, optim_scalars=scalars, param_groups=state["param_groups"])


def load_checkpoint(
    path: Path | str, module: nn.Module, optimiser: torch.optim.Optimizer
) -> tuple[int, dict[str, Any]]:
    """Restore ``module`` and ``optimiser`` in place; returns the step the checkpoint was taken after."""
    tensors, meta = load_artifact(path, KIND)
    return restore_checkpoint(tensors, meta, module, optimiser)


def restore_checkpoint(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], module: nn.Module, optimiser: torch.optim.Optimizer
) -> tuple[int, dict[str, Any]]:
    """:func:`load_checkpoint` from a checkpoint already read (a caller that also reads its own entries)."""
    meta = dict(meta)
    module.load_state_dict({k.removeprefix("module/"): v for k, v in tensors.items() if k.startswith("module/")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    scalars = meta.pop("optim_scalars")
    for pid, entry in scalars.items():
        state.setdefault(int(pid), {}).update(entry)
    optimiser.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    # torch turns plain-number state (geoopt's int `step`) into tensors on load; put the numbers
    # back so bias corrections round exactly as in an uninterrupted run
    params = [p for group in optimiser.param_groups for p in group["params"]]
    for pid, entry in scalars.items():
        optimiser.state[params[int(pid)]].update(entry)
    return int(meta.pop("step")), meta
