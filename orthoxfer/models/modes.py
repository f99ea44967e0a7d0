"""Running a caller's model for inference without changing what the caller sees afterwards.

Scoring, relating two towers, collecting activations and voting gradient signs all need
eval mode (dropout off, the model deterministic), but the model they are handed may be
in the middle of training. The convention, decided once here: the mode is restored on
the way out; the device is not. A model given a ``device`` moves there in place and
stays, because every step of a run (fitting, scoring, transfers) works on the run's one
device, and moving a ViT's weights back and forth on every call would copy them for
nothing. Where a caller needs the model elsewhere afterwards, it moves it itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(*models: nn.Module, device: torch.device | str | None = None) -> Iterator[None]:
    """``models`` in eval mode (on ``device`` when given) for the block; each gets its own mode back."""
    modes = [model.training for model in models]
    try:
        for model in models:
            if device is not None:
                model.to(device)
            model.eval()
        yield
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)
