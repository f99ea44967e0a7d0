"""``gradfix``: keep the source entries whose sign agrees with the target's own descent direction.

On the target, with its own zero-shot head, the cross-entropy gradient g over a few
labelled images per class says which way each entry of every tensor the vector carries
should move for this task on *this* model. Entries of the source vector that point the
same way (sign(dW) == sign(-g)) are kept, the rest zeroed; no weight is updated. The
sign is a per-sample majority vote of sign(-g_i) (one backward per image: the released
default) or the sign of the mean gradient (one backward per task). The images come
from the training part of the target's few-shot pools only, so lambda can still be
chosen on the validation part. The mask is per entry of dW: LoRA vectors are densified.

``gradfix-pool`` votes with every image of those training parts instead of
``--gradfix-shots`` per class: the reference's 2 shots per class is its own protocol,
but in a table where every other row sees the whole pool it would leave GradFix with
less data than its rivals. A registered variant, not an option value, so both rows
stand side by side with their own controls and seeds.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from orthoxfer.errors import UsageError
from orthoxfer.models.modes import evaluating
from orthoxfer.problem.tasks import FewShotTask, ImageEncoder
from orthoxfer.strategies.options import Option
from orthoxfer.transfers.base import (
    Pools,
    Transfer,
    Transferred,
    TransferSettings,
    norm_ratio,
    per_tensor,
    require_pools,
)
from orthoxfer.vectors.sites import param_overrides
from orthoxfer.vectors.taskvector import TaskVector

SHOTS = Option(
    "gradfix_shots",
    2,
    "gradfix: labelled images per class (from each task's few-shot training part) whose "
    "gradient on the target sets the signs.",
    minimum=1,
)
VOTE = Option(
    "gradfix_vote",
    "majority",
    "gradfix: sign(-g) by a per-sample majority vote (one backward per image) or "
    "the sign of the mean gradient (one backward per task).",
    choices=("majority", "mean"),
)


def per_class_sample(labels: torch.Tensor, shots: int | None, seed: int) -> torch.Tensor:
    """Indices of ``shots`` items per class (all of a class that has fewer; every item with ``None``), drawn with
    ``seed``."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:shots]])
    return torch.cat(chosen)


class _Gradients:
    """Cross-entropy gradients of the target w.r.t. zero deltas on every tensor a vector carries.

    A delta on a site's rows (through :func:`~orthoxfer.vectors.sites.param_overrides`) or
    on an ``extra`` parameter has the gradient of that part of the weight itself.
    """

    def __init__(self, model: nn.Module, vector: TaskVector, device: torch.device) -> None:
        self.model = model
        self.sites = vector.check_fits(model)
        self.encoder = ImageEncoder(model)
        self.site_deltas = [torch.zeros(s.shape, device=device, requires_grad=True) for s in self.sites]
        self.extra_deltas = {n: torch.zeros_like(model.get_parameter(n), requires_grad=True) for n in vector.extra}

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, head: nn.Module, divisor: int) -> TaskVector:
        """The gradient of ``sum CE / divisor`` over the batch, as a dense vector on the same tensors."""
        overrides = param_overrides(self.model, self.sites, self.site_deltas, prefix="model.")
        for name, delta in self.extra_deltas.items():  # an extra may be the uncovered rows of a site's parameter
            key = "model." + name
            overrides[key] = overrides.get(key, self.model.get_parameter(name)) + delta
        logits = head(functional_call(self.encoder, overrides, (images,)))
        loss = F.cross_entropy(logits.float(), labels, reduction="sum") / divisor
        grads = torch.autograd.grad(loss, [*self.site_deltas, *self.extra_deltas.values()])
        dense = dict(zip((s.name for s in self.sites), grads[: len(self.sites)]))
        return TaskVector(dense, extra=dict(zip(self.extra_deltas, grads[len(self.sites) :])))


def _samples(pools: dict[str, FewShotTask], shots: int | None, seed: int, device: torch.device) -> list[tuple]:
    """(images, labels, head) of each task's sampled images: un-augmented, on ``device``."""
    out = []
    for i, pool in enumerate(pools.values()):
        images, labels = pool.batch(per_class_sample(pool.labels, shots, seed + i), augment=False)
        out.append((images.to(device), labels.to(device), pool.head))
    return out


def descent_signs(
    target: nn.Module,
    vector: TaskVector,
    pools: dict[str, FewShotTask],
    settings: TransferSettings,
    shots: int | None,
) -> tuple[TaskVector, int]:
    """sign(-g) estimated on every tensor ``vector`` carries (0 where the vote ties) from ``shots`` images per class
    (``None``: every image), and the backward passes it took."""
    device = torch.device(settings.device)
    with evaluating(target, *(pool.head for pool in pools.values()), device=device):
        gradients = _Gradients(target, vector, device)
        samples = _samples(pools, shots, settings.seed, device)
        one_by_one = settings.gradfix_vote == "majority"
        total = sum(len(labels) for _, labels, _ in samples)
        tally: TaskVector | None = None  # a running sum: one vote per image would hold a vector's worth per image
        passes = 0
        for images, labels, head in samples:
            for x, y in zip(images.split(1), labels.split(1)) if one_by_one else [(images, labels)]:
                g = gradients(
                    x, y, head, 1 if one_by_one else total
                )  # mean vote: -g of the mean loss, summed over tasks
                vote = per_tensor(lambda t: torch.sign(-t), g) if one_by_one else -g
                tally, passes = vote if tally is None else tally + vote, passes + 1
    if tally is None:
        raise UsageError("gradfix needs at least one labelled image to vote with; the pools hold none")
    return per_tensor(lambda t: torch.sign(t).cpu(), tally), passes


class GradFix(Transfer):
    name = "gradfix"
    needs = "labels"
    rectangular = True  # entry by entry: any shape
    options: ClassVar[tuple[Option, ...]] = (SHOTS, VOTE)

    def shots(self, settings: TransferSettings) -> int | None:
        """Images per class that vote (``None``: every image of the pools)."""
        return settings.gradfix_shots

    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        signs, passes = descent_signs(target, vector, require_pools(pools, self.name), settings, self.shots(settings))
        mask = per_tensor(lambda t, sign: torch.sign(t) * sign.to(t) > 0, vector, signs)
        result = per_tensor(lambda t, keep: t * keep, vector, mask)
        learnt = {
            **{f"mask/{s}": m for s, m in mask.dense.items()},
            **{f"mask/extra/{n}": m for n, m in mask.extra.items()},
        }
        kept = sum(int(m.sum()) for m in learnt.values()) / sum(m.numel() for m in learnt.values())
        diagnostics = {"kept_fraction": kept, "norm_ratio": norm_ratio(result, vector), "backward_passes": passes}
        return Transferred(result, learnt=learnt, diagnostics=diagnostics)


class GradFixPool(GradFix):
    """GradFix voting with every image of the pools' training part (see the module docstring)."""

    name = "gradfix-pool"
    options = (VOTE,)

    def shots(self, settings: TransferSettings) -> int | None:
        return None
