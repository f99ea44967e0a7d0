"""Control vectors: what an alignment gets from a vector that carries no knowledge of the task.

A full U per site has as many parameters as the site, so ``U^T M U`` can act as a
re-parameterised few-shot fine-tune for almost any M of the right size. Aligning a
control with the same strategy and budget measures that part; the **transfer gain**
is accuracy(aligned real vector) - accuracy(aligned control).

- ``norm``: Gaussian per site, scaled to the real site's Frobenius norm;
- ``spectrum``: ``Q^T dW Q`` with a random orthogonal Q per site (same singular values);
- ``other-task``: another task's vector, rescaled per site to this one's norms.
"""

from __future__ import annotations

import torch

from orthoxfer.errors import UsageError
from orthoxfer.vectors.taskvector import TaskVector

CONTROLS = ("norm", "spectrum", "other-task")


def random_orthogonal(d: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Haar-distributed orthogonal matrix (QR of a Gaussian with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def control_vector(tv: TaskVector, kind: str, seed: int = 0, other: TaskVector | None = None) -> TaskVector:
    """A control for ``tv`` of ``kind`` (see module docstring); dense, same sites and shapes."""
    if kind not in CONTROLS:
        raise UsageError(f"unknown control {kind!r}; choose one of {', '.join(CONTROLS)}")
    g = torch.Generator().manual_seed(seed)
    norms = tv.norms()
    meta = dict(tv.meta, control=kind, control_seed=seed, kind="dense", rank=None)
    dense: dict[str, torch.Tensor] = {}
    for site in tv.sites:
        d = tv.delta(site)
        if kind == "norm":
            noise = torch.randn(d.shape, generator=g, dtype=torch.float64)
            dense[site] = (noise * (norms[site] / noise.norm())).to(d.dtype)
        elif kind == "spectrum":
            rows = random_orthogonal(
                d.shape[0], g, torch.float64
            )  # two Haar rotations: a rectangular site keeps its spectrum too
            cols = rows if d.shape[0] == d.shape[1] else random_orthogonal(d.shape[1], g, torch.float64)
            dense[site] = (rows.T @ d.double() @ cols).to(d.dtype)
        else:
            if other is None:
                raise UsageError("the other-task control needs another task's vector")
            o = other.delta(site).double()
            dense[site] = (o * (norms[site] / o.norm()) if o.norm() > 0 else o).to(d.dtype)
    return TaskVector(dense, extra=dict(tv.extra), meta=meta)


def check_task_count(controls: tuple[str, ...], tasks: int, option: str = "--controls") -> None:
    """Refuse ``other-task`` before any row runs where there is no other task to borrow from."""
    if "other-task" in controls and tasks < 2:
        raise UsageError(
            "the other-task control needs two or more tasks (each borrows another's vector); "
            f"add a task or leave it out of {option}"
        )


def control_vectors(vectors: dict[str, TaskVector], kind: str, seed: int = 0) -> dict[str, TaskVector]:
    """A control for each named vector, seeded per position; ``other-task`` borrows the next task's vector."""
    names = list(vectors)
    check_task_count((kind,), len(names))
    others = names[1:] + names[:1]
    return {
        n: control_vector(vectors[n], kind, seed=seed + i, other=vectors[o])
        for i, (n, o) in enumerate(zip(names, others))
    }
