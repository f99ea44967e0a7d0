"""Tolerances for comparing two computations of one quantity, derived from float rounding.

Two float32 computations of the same value (a batched path against a per-site one, a
hand-written backward against autograd, one CPU kernel against another) differ by
rounding, and the bound on that difference is what a test may assert: a value that sums
``terms`` products whose magnitudes add up to at most ``scale`` is computed to within
``terms * eps * scale`` (the classic gamma_n bound, eps = 2^-23 for float32), whatever
order the kernel adds them in. A fixed ``atol`` passes on one machine's kernels and
fails on another's; this bound holds on all of them. Bitwise equality is asserted only
where it is promised: the same code path on the same inputs (resume, same-seed reruns).
"""

from __future__ import annotations

import torch

EPS = {torch.float32: torch.finfo(torch.float32).eps, torch.float64: torch.finfo(torch.float64).eps}


def rounding_bound(terms: int, scale: float | torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    """The most two computations of a sum of ``terms`` products (magnitudes adding to ``scale``) can differ by."""
    return float(terms * EPS[dtype] * (scale.detach() if isinstance(scale, torch.Tensor) else scale))


def assert_rounding_close(
    actual: torch.Tensor, expected: torch.Tensor, terms: int, scale: float | torch.Tensor | None = None
) -> None:
    """``max |actual - expected| <= rounding_bound(terms, scale)``; ``scale`` defaults to ``max |expected|``."""
    scale = expected.abs().max() if scale is None else scale
    bound = rounding_bound(terms, scale, expected.dtype)
    diff = (actual - expected).abs().max().item()
    assert diff <= bound, (
        f"differ by {diff:.3g}, more than rounding allows ({terms} terms at scale {float(scale):.3g}: {bound:.3g})"
    )


def assert_norm_close(
    actual: torch.Tensor, expected: torch.Tensor, terms: int, scale: float | torch.Tensor | None = None
) -> None:
    """``||actual - expected||_F <= rounding_bound(terms, scale)``, ``scale`` defaulting to ``||expected||_F``.

    For results whose entries mix many terms of unknown size (gradients through a model or a
    factorisation), where the norm of the whole is the natural magnitude of its summands.
    """
    scale = expected.detach().norm() if scale is None else scale
    bound = rounding_bound(terms, scale, expected.dtype)
    diff = (actual - expected).detach().norm().item()
    assert diff <= bound, f"differ by {diff:.3g} in norm, more than rounding allows ({terms} terms: {bound:.3g})"


def spectral(t: torch.Tensor) -> torch.Tensor:
    """The largest singular value of each matrix of a stack (as a float64 tensor)."""
    return torch.linalg.matrix_norm(t.double(), ord=2)


def rotation_bound(du: torch.Tensor, u: torch.Tensor, dw: torch.Tensor) -> float:
    """How far ``V^T dW V`` may lie from ``U^T dW U`` (Frobenius) when ``V = U + du``, rounding of both included.

    ``V^T dW V - U^T dW U = du^T dW V + U^T dW du``, so the gap is at most
    ``||du||_2 (||U||_2 + ||V||_2) ||dW||_F``; each product adds ``2 d eps ||U||_2^2 ||dW||_F``.
    """
    du, u, dw = du.detach(), u.detach(), dw.detach()
    nu, nv, nd = spectral(u), spectral(u + du), torch.linalg.matrix_norm(dw.double())
    return float(spectral(du) * (nu + nv) * nd + 2 * rounding_bound(2 * u.shape[-1], nu * nv * nd, torch.float32))
