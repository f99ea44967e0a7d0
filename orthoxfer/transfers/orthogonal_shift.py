"""``orthogonal-shift``: data-free; per tensor, the vector minus its component along the base shift.

The base shift s = theta_target - theta_source is how far the target's weights are from
the source's; the part of a task vector along s is the part most likely to re-add what
differs between the two pre-trainings rather than the task. With beta = 1 the result is
orthogonal to s, tensor by tensor (each site's rows, each ``extra`` parameter); where s
is zero the tensor is left as it was. A LoRA vector is densified first.
"""

from __future__ import annotations

import torch
from torch import nn

from orthoxfer.transfers.base import (
    Pools,
    Transfer,
    Transferred,
    TransferSettings,
    model_tensors,
    norm_ratio,
    per_tensor,
    require_source,
)
from orthoxfer.vectors.taskvector import MismatchError, TaskVector


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    return 0.0 if na == 0 or nb == 0 else abs(float((a * b).sum() / (na * nb)))


class OrthogonalShift(Transfer):
    name = "orthogonal-shift"
    needs = "none"
    rectangular = True  # entry by entry: any shape

    def transfer(
        self, vector: TaskVector, source: nn.Module | None, target: nn.Module, pools: Pools, settings: TransferSettings
    ) -> Transferred:
        source = require_source(source, self.name)
        try:
            shift = model_tensors(target, vector) - model_tensors(source, vector)
        except MismatchError as exc:
            raise MismatchError(f"{self.name} needs two models of one architecture: {exc}") from None
        before: list[float] = []
        after: list[float] = []

        def project(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            t64, s64 = t.double(), s.to(t.device).double()
            squared = (s64 * s64).sum()
            out = t64 if squared == 0 else t64 - ((t64 * s64).sum() / squared) * s64
            before.append(_cosine(t64, s64))
            after.append(_cosine(out, s64))
            return out.to(t.dtype)

        result = per_tensor(project, vector, shift)
        diagnostics = {
            "cos_shift_before": sum(before) / len(before),
            "cos_shift_mean": sum(after) / len(after),
            "norm_ratio": norm_ratio(result, vector),
        }
        return Transferred(result, diagnostics=diagnostics)
