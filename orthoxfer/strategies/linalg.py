"""Batched linear algebra on stacks of d x d transforms, written around where the time goes.

One alignment step at ViT-B/32 scale works on 48 stacked 768 x 768 matrices. Measured on
a shared 2-core Xeon (torch 2.14.1 with MKL), three facts shape everything here:

- one batched matmul over the stack costs about 0.35 s and an elementwise pass over a
  fresh 113 MB stack 50-250 ms (page faults included), so a formulation is as cheap as
  its count of batched matmuls and of full passes;
- batched LU on CPU with more than one thread fails or hangs at this size ("Intel oneMKL
  ERROR: Parameter 6 was incorrect on entry to SLASWP", pytorch/pytorch#141358, #142815),
  which made ``cayley`` and the Cayley retraction hang at ViT-B/32 scale;
- MKL's threaded factorisations collapse when the cores are shared (Cholesky 3.5x, QR 3.4x,
  SVD 50x slower than single-threaded under a load of 4-5 on 2 cores).

So every factorisation of a CPU stack runs single-threaded (:func:`factorisation_threads`),
matmuls and triangular solves keep every thread, and the QR retraction is Cholesky-QR
(one matmul, a Cholesky factor, one triangular solve). Backward passes are written by
hand where autograd would spend extra matmuls or passes, and identities are added on
diagonals in place. Nothing here synchronises host and device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def factorisation_threads(t: torch.Tensor) -> Iterator[None]:
    """Run LAPACK factorisations of CPU tensors single-threaded (see the module docstring)."""
    if t.device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def inverse_identity_plus_skew(s: torch.Tensor) -> torch.Tensor:
    """``(I + S)^-1`` for a stack of skew-symmetric S: by LU on CPU, through a Cholesky factor on CUDA.

    ``(I + S)^T (I + S) = I + S^T S``, so the singular values of ``I + S`` are >= 1: it is
    never singular (no error check, hence no host sync) and its condition number is
    ``sqrt(1 + ||S||_2^2)``. Which route is faster depends on the device; at 48 x 768 x 768:
    on a 2-core Xeon, LU 0.72 s against 1.66 s through Cholesky with multi-threaded
    triangular solves; on an H100, batched LU 16.5 ms against 6.4 ms for
    ``(I + S)^-1 = L^-T L^-1 (I - S)`` with ``L L^T = I + S^T S`` (one matmul, one Cholesky
    factor, two triangular solves). The Cholesky route squares the condition number: near
    the identity that costs nothing (relative error against float64 1.5e-6 at
    ``||S||_2 ~ 4``, LU 5.7e-7; ``||C^T C - I||_F`` of the Cayley map at d = 768 6.6e-5
    against LU's 3.6e-5, and 2.4e-4 against 3.2e-4 at ``||S||_2 ~ 15``), but far from it,
    as when a learned U nears a rotation by pi, it does: 1.3e-3 against 2.0e-4 at
    ``||S||_2 ~ 78``.
    """
    m = s.clone()
    m.diagonal(0, -2, -1).add_(1)
    if s.device.type == "cuda":
        return inverse_by_cholesky(m)
    with factorisation_threads(s):
        return torch.linalg.inv_ex(m)[0]


def inverse_by_cholesky(m: torch.Tensor) -> torch.Tensor:
    """``M^-1 = L^-T L^-1 M^T`` with ``L L^T = M^T M``, for M with singular values >= 1 (no error check)."""
    chol = torch.linalg.cholesky_ex(m.mT @ m)[0]
    half = torch.linalg.solve_triangular(chol, m.mT, upper=False)
    return torch.linalg.solve_triangular(chol.mT, half, upper=True)


class _Rotate(torch.autograd.Function):
    """``U^T dW U`` with ``dW`` constant: 2 batched matmuls forward, 3 backward, no extra passes.

    With ``T = U^T dW`` saved, ``dL/dU = dW U G^T + T^T G``; the second product is accumulated
    into the first by ``baddbmm``, where autograd would add two transposed gradients.
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        t = u.mT @ dw
        ctx.save_for_backward(u, dw, t)
        return t @ u

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        u, dw, t = ctx.saved_tensors
        return torch.baddbmm((dw @ u) @ g.mT, t.mT, g), None


def rotate_dense(u: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    """``U^T dW U`` for stacks (n, d, d), differentiable in U only (the task vector is data)."""
    return _Rotate.apply(u, dw.detach())


class _GramResidual(torch.autograd.Function):
    """``U^T U - I``: one matmul forward and one backward (``dL/dU = U (G + G^T)``), where autograd spends two."""

    @staticmethod
    def forward(ctx, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u)
        out = u.mT @ u
        out.diagonal(0, -2, -1).sub_(1)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (u,) = ctx.saved_tensors
        return u @ (g + g.mT)


def gram_residual(u: torch.Tensor) -> torch.Tensor:
    """``U^T U - I`` per matrix of a stack."""
    return _GramResidual.apply(u)


def orthogonality_error(stack: torch.Tensor) -> torch.Tensor:
    """||U^T U - I||_F per U of a stack, in float32 or better; differentiable at the cost of one extra matmul."""
    u = stack.float() if stack.dtype in (torch.float16, torch.bfloat16) else stack
    return torch.linalg.matrix_norm(gram_residual(u))


class _Cayley(torch.autograd.Function):
    """``C = (I + S)^-1 (I - S) = 2 (I + S)^-1 - I`` with ``S = A - A^T``.

    With ``K = (I + S)^-1``: ``dC = -2 K dS K``, so ``dL/dS = -2 K^T G K^T`` (two matmuls)
    and ``dL/dA = dL/dS - (dL/dS)^T``.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor) -> torch.Tensor:
        k = inverse_identity_plus_skew(a - a.mT)
        ctx.save_for_backward(k)
        c = k.mul(2)
        c.diagonal(0, -2, -1).sub_(1)
        return c

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (k,) = ctx.saved_tensors
        kt = k.mT
        gs = (kt @ g) @ kt  # dL/dS = -2 gs
        return (gs.mT - gs).mul_(2)


def cayley(a: torch.Tensor) -> torch.Tensor:
    """The Cayley map ``(I - S)(I + S)^-1`` of ``S = A - A^T``, per matrix of a stack (the two factors commute)."""
    return _Cayley.apply(a)


def cholesky_qr(y: torch.Tensor) -> torch.Tensor:
    """The Q of ``Y = QR`` with ``diag(R) > 0``: ``R = chol(Y^T Y)^T``, ``Q = Y R^-1``.

    The same Q as Householder QR with the signs fixed (geoopt's QR retraction), to float
    precision for well-conditioned Y: a retraction step ``X + u`` off an orthogonal X has
    condition number ``1 + O(||u||)``, and Cholesky-QR loses ``cond(Y)^2 * eps``.
    """
    with factorisation_threads(y):
        chol, _ = torch.linalg.cholesky_ex(y.mT @ y)
    return torch.linalg.solve_triangular(chol.mT, y, upper=True, left=False)


def is_identity_stack(stack: torch.Tensor) -> bool:
    """Whether every matrix of the stack is exactly I (a start U0 = I needs no product with U0)."""
    eye = torch.eye(stack.shape[-1], dtype=stack.dtype, device=stack.device)
    return bool(torch.equal(stack, eye.expand_as(stack)))


def _lowrank_skew_factors(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W = [A B]`` (n, d, 2k) and ``M = W^T W - J`` (n, 2k, 2k), with ``J = [[0, I], [-I, 0]]``.

    ``S = A B^T - B A^T = W J W^T``, and ``M`` is never singular: if ``M x = 0`` then
    ``x^T W^T W x = x^T M x = 0`` (J is skew), so ``W x = 0`` and ``J x = 0``, so ``x = 0``.
    """
    k = a.shape[-1]
    w = torch.cat((a, b), -1)
    m = w.mT @ w
    m[..., :k, k:].diagonal(0, -2, -1).sub_(1)  # - J: -I top right ...
    m[..., k:, :k].diagonal(0, -2, -1).add_(1)  # ... and +I bottom left
    return w, m


def _solve_small(m: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``M^-1 rhs`` for the 2k x 2k ``M`` above, with no error check (no host sync; M is invertible)."""
    with factorisation_threads(m):
        return torch.linalg.solve_ex(m, rhs)[0]


def cayley_lowrank(a: torch.Tensor, b: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    """``U0 (I - S)(I + S)^-1`` for ``S = A B^T - B A^T`` (A, B of shape (n, d, k)), as a dense (n, d, d) stack.

    Why Woodbury: ``S`` has rank <= 2k, so ``I + S`` differs from I only inside a 2k-dim
    subspace and its inverse needs no d x d factorisation. With ``W = [A B]`` and
    ``S = W J W^T``, ``(I + S)^-1 = I - W (J^-1 + W^T W)^-1 W^T = I - W M^-1 W^T``
    (``J^-1 = -J``), hence ``C = 2 (I + S)^-1 - I = I - 2 W M^-1 W^T``: one 2k x 2k solve
    per matrix, exactly orthogonal to float precision like the dense map. Building the
    d x d result costs O(d^2 k) (one (d x 2k)(2k x d) product; one more, ``U0 W``, when
    ``base`` U0 is given); autograd's backward is of the same order. ``base=None`` means U0 = I.
    """
    left, right = cayley_lowrank_factors(a, b)
    if base is not None:
        return torch.baddbmm(base, base @ left, right.mT)
    c = left @ right.mT
    c.diagonal(0, -2, -1).add_(1)
    return c


def cayley_lowrank_factors(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``L, R`` (n, d, 2k) with ``(I - S)(I + S)^-1 = I + L R^T``: ``L = W``, ``R^T = -2 M^-1 W^T`` (see above)."""
    w, m = _lowrank_skew_factors(a, b)
    return w, _solve_small(m, w.mT).mT.mul(-2)


def cayley_lowrank_apply(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(I - S)(I + S)^-1 v`` for ``S = A B^T - B A^T``: ``v - 2 W M^-1 (W^T v)``, O(d k m) for v of m columns.

    The same Woodbury identity as :func:`cayley_lowrank`, never forming a d x d matrix
    (the Cayley retraction of a tall Stiefel point uses it).
    """
    w, m = _lowrank_skew_factors(a, b)
    return torch.baddbmm(v, w, _solve_small(m, w.mT @ v), alpha=-2)


def rotate_factored(dw: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``U^T dW U`` for ``U = I + L R^T`` (L, R of shape (n, d, m)) without forming U: O(d^2 m), not O(d^3).

    ``(I + R L^T) dW (I + L R^T) = dW + R (L^T dW + (L^T dW L) R^T) + (dW L) R^T``: four
    (d x d)(d x m)-sized products instead of two d x d ones, so with a low-rank rotation
    (``--rotation-rank k``, m <= 2k) the step pays for the parameters it has. Autograd's
    backward is of the same order.
    """
    p = left.mT @ dw  # (n, m, d)
    inner = torch.baddbmm(p, p @ left, right.mT)  # L^T dW + (L^T dW L) R^T
    return torch.baddbmm(torch.baddbmm(dw, right, inner), dw @ left, right.mT)


def factored_orthogonality_error(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``||U^T U - I||_F`` per matrix for ``U = U0 (I + L R^T)`` with U0 orthogonal, from 2m x 2m Grams: O(d m^2).

    ``U^T U - I = L R^T + R L^T + R (L^T L) R^T = Z C Z^T`` with ``Z = [L R]`` and
    ``C = [[0, I], [I, L^T L]]`` (symmetric), so ``||.||_F^2 = tr((Z^T Z C)^2)``: a low-rank
    penalty never needs the d x d product a full ``U^T U`` costs. The identity cancels
    digits near 0 (about 1e-4 absolute in float32), fine for a penalty, not for checking
    that an exact strategy stays orthogonal.
    """
    m = left.shape[-1]
    eye = torch.eye(m, dtype=left.dtype, device=left.device).expand(*left.shape[:-2], m, m)
    c = torch.cat((torch.cat((torch.zeros_like(eye), eye), -1), torch.cat((eye, left.mT @ left), -1)), -2)
    z = torch.cat((left, right), -1)
    p = (z.mT @ z) @ c
    squared = (p * p.mT).sum((-2, -1))
    positive = squared > 0  # at U = I exactly (B = 0 at the start) the norm is 0: its gradient is taken as 0
    return torch.where(positive, squared.clamp_min(torch.finfo(squared.dtype).tiny).sqrt(), torch.zeros_like(squared))
