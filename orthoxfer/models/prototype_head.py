"""A frozen centred cosine class-mean head: the head the ``mini`` suite uses in place of zero-shot text heads.

The mini models' text towers are pre-trained on captions about coloured shapes and
characters, so they cannot name the tasks' classes (a coin, a texture, a scene) and
give heads near chance. The paper's heads have two properties this keeps: they are
built from the model itself before any method runs, and they stay frozen. Features
are L2-normalised, a frozen mean is subtracted (the mean feature of a small CLIP
dominates every cosine; without centring, training through the head stalled in the
design's feasibility run), renormalised, and scored by ``scale`` x cosine to each
class's mean direction, as CLIP scores by ``logit_scale`` x cosine to text embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.errors import UsageError


class PrototypeHead(nn.Module):
    """Image features -> logits: ``scale * cos(centre(f), prototype_c)``; buffers only, nothing trains."""

    center: torch.Tensor
    prototypes: torch.Tensor

    def __init__(self, center: torch.Tensor, prototypes: torch.Tensor, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("center", center)
        self.register_buffer("prototypes", prototypes)
        self.scale = scale

    @classmethod
    @torch.no_grad()
    def from_features(
        cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int, scale: float = 16.0
    ) -> PrototypeHead:
        """The head whose centre is the pool's mean normalised feature and whose prototypes are its class means."""
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise UsageError(f"prototype head: labels must lie in [0, {num_classes})")
        missing = (torch.bincount(labels, minlength=num_classes) == 0).nonzero().flatten().tolist()
        if missing:
            raise UsageError(f"a prototype head needs every class in its pool; classes {missing} have no image")
        unit = F.normalize(features.float(), dim=-1)
        center = unit.mean(0)
        centred = F.normalize(unit - center, dim=-1)
        sums = torch.zeros(num_classes, features.shape[1]).index_add_(0, labels, centred)
        return cls(center, F.normalize(sums, dim=-1), scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        centred = F.normalize(F.normalize(features, dim=-1) - self.center, dim=-1)
        return self.scale * centred @ self.prototypes.T
