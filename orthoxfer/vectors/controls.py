"""Control vectors: what a method gets from a vector that carries no knowledge of the task.

A full U per site has as many parameters as the site, so ``U^T M U`` can act as a
re-parameterised few-shot fine-tune for almost any M of the right size. Carrying a
control with the same method and budget measures that part; the **transfer gain** is
accuracy(carried real vector) - accuracy(same method on the control).

- ``norm``: Gaussian per site, scaled to the real site's Frobenius norm;
- ``spectrum``: ``Q1^T dW Q2`` with independent random orthogonal Q1, Q2 per site: the
  same singular values, but other eigenvalues, so not in dW's orbit under
  ``U -> U^T M U``;
- ``orbit``: ``Q^T dW Q``, one Q on both sides of a square site: the same eigenvalues
  too. A method that fits ``U^T M U`` to the vector (the trained aligners) gets dW back
  exactly at ``U = Q^T``, so for it this control only measures the value of starting
  at I; it is valid only for methods that find their map without fitting a similarity
  transform to the vector (:func:`valid_controls`);
- ``other-task``: another task's vector, rescaled per site to this one's norms.

Each control is seeded by (seed, task, control), never ``seed + index``: task i at
seed s must not share its random rotation with task i+1 at seed s-1.
"""

from __future__ import annotations

import hashlib

import torch

from orthoxfer.errors import UsageError
from orthoxfer.vectors.taskvector import TaskVector

CONTROLS = ("norm", "spectrum", "orbit", "other-task")
IN_ORBIT = ("orbit",)  # undone by a method that fits U^T M U to the vector


def valid_controls(controls: tuple[str, ...], fits_similarity: bool) -> tuple[str, ...]:
    """The controls of ``controls`` a method can be measured against: without ``orbit`` for one that fits a
    similarity transform to the vector (it would rotate the control back into the real vector)."""
    return tuple(c for c in controls if not (fits_similarity and c in IN_ORBIT))


def random_orthogonal(d: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Haar-distributed orthogonal matrix (QR of a Gaussian with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def control_seed(seed: int, task: str, kind: str) -> int:
    """An independent seed per (run seed, task, control): a hash, so no two of them share a stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{task}/{kind}".encode()).digest()[:7], "big")


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
        elif kind in ("spectrum", "orbit"):
            rows = random_orthogonal(d.shape[0], g, torch.float64)
            same = kind == "orbit" and d.shape[0] == d.shape[1]
            cols = rows if same else random_orthogonal(d.shape[1], g, torch.float64)
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
    """A control for each named vector, seeded by (seed, task, kind); ``other-task`` borrows the next task's vector."""
    names = list(vectors)
    check_task_count((kind,), len(names))
    others = names[1:] + names[:1]
    return {
        n: control_vector(vectors[n], kind, seed=control_seed(seed, n, kind), other=vectors[o])
        for n, o in zip(names, others)
    }
