# SPDX-License-Identifier: MIT
"""Orthonormalisation and spectral norms of dense weights.

Björck–Bowie iterations (:func:`polar_bjorck`, :func:`bjorck_step`, the one-step training
surrogate :func:`bjorck1_linear`), Cholesky QR (:func:`cholesky_orthonormalize`), the exact
spectral norm (:func:`spectral_norm_exact`), power iteration (:func:`power_iteration`), and
the float32 rounding margin of a weight of operator norm ≤ 1 (:func:`float32_cast_margin`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bjorck1_linear",
    "bjorck_step",
    "cholesky_orthonormalize",
    "float32_cast_margin",
    "gram_row_sum_bound",
    "polar_bjorck",
    "power_iteration",
    "small_gram",
    "rounding_margin",
    "spectral_norm_exact",
    "unit_norm_cast",
]


def small_gram(w: Tensor) -> Tensor:
    """Gram matrix on the smaller side: W Wᵀ (out ≤ in) or Wᵀ W (out > in)."""
    return w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w


def gram_row_sum_bound(gram: Tensor) -> Tensor:
    """A certified upper bound of :math:`\\sigma_{\\max}(W)^2` from the Gram matrix.

    :math:`\\|G\\|_2 \\le \\|G\\|_\\infty = \\max_i \\sum_j |G_{ij}|` for any matrix, and
    :math:`\\|G\\|_2 = \\sigma_{\\max}(W)^2` for :math:`G = W^\\top W`.
    """
    return gram.abs().sum(-1).amax(-1)


def bjorck_step(w: Tensor, gram: Tensor | None = None) -> Tensor:
    """One Björck–Bowie step :math:`W (\\tfrac32 I - \\tfrac12 W^\\top W)`.

    On singular values it is :math:`\\sigma \\mapsto \\tfrac32\\sigma - \\tfrac12\\sigma^3`,
    whose maximum over :math:`[0, 2]` is 1 (at :math:`\\sigma = 1`): the result has spectral
    norm :math:`\\le 1` whenever :math:`\\sigma_{\\max}(W) \\le 2`, and the same singular
    vectors (the polar factor :math:`UV^\\top` is unchanged).

    Shape: (out, in) -> (out, in).
    """
    if gram is None:
        gram = small_gram(w)
    eye = torch.eye(gram.shape[-1], dtype=w.dtype, device=w.device)
    a = 1.5 * eye - 0.5 * gram
    return a @ w if w.shape[-2] <= w.shape[-1] else w @ a


def polar_bjorck(
    w: Tensor,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    dtype: torch.dtype | None = torch.float64,
) -> tuple[Tensor, float]:
    """The orthogonal polar factor :math:`Q = U V^\\top` of :math:`W = U \\Sigma V^\\top`.

    Björck–Bowie iterations from a *certified* start: if the Gram row-sum bound
    :math:`b \\ge \\sigma_{\\max}^2` exceeds 2.5 the iteration starts from :math:`W/\\sqrt b`
    (all singular values in (0, 1], where the iteration converges), otherwise from
    :math:`W` (warm start: a near-orthogonal latent converges quadratically in a few steps).
    It stops when :math:`e = \\|G - I\\|_F \\le` ``tol`` (:math:`G` the Gram matrix of the
    iterate) and finally divides by :math:`\\sqrt{1 + e}`, so that the result satisfies
    :math:`\\sigma_{\\max}(Q) \\le 1` *exactly* (up to rounding) even if the tolerance was not
    reached, and :math:`\\sigma_{\\min}(Q) \\ge \\sqrt{(1-e)/(1+e)}`.

    A rank-deficient :math:`W` keeps its zero singular values (no orthogonal factor exists).

    Args:
        w: the latent weight, shape (out, in).
        tol: stop when :math:`\\|G - I\\|_F \\le` tol.
        max_iter: at most this many steps.
        dtype: compute in this dtype (float64 by default: the float32 rounding floor of
            :math:`\\|G-I\\|_F` for a 512×512 matrix is ~1e-3). ``None`` keeps ``w.dtype``.

    Returns:
        ``(Q, e)``: Q in ``w.dtype``, shape (out, in); e the final :math:`\\|G-I\\|_F`.
    """
    out_dtype = w.dtype
    q = w.detach().to(dtype) if dtype is not None else w
    gram = small_gram(q)
    bound = float(gram_row_sum_bound(gram))
    if not math.isfinite(bound) or bound == 0.0:
        raise ValueError("Cannot orthonormalise a weight that is zero, NaN or infinite")
    if bound > 2.5:
        q = q / math.sqrt(bound)
        gram = gram / bound
    eye = torch.eye(gram.shape[-1], dtype=q.dtype, device=q.device)
    err = float(torch.linalg.matrix_norm(gram - eye))
    for _ in range(max_iter):
        if err <= tol:
            break
        q = bjorck_step(q, gram)
        gram = small_gram(q)
        new_err = float(torch.linalg.matrix_norm(gram - eye))
        if new_err >= err and err < 1e-3:  # rounding floor reached
            err = new_err
            break
        err = new_err
    q = q / math.sqrt(1.0 + err)
    return q.to(out_dtype), err


def bjorck1_linear(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """:math:`y = x\\,Q^\\top + b` with :math:`Q = W(\\tfrac32 I - \\tfrac12 W^\\top W)`,
    applied without forming Q.

    :math:`x Q^\\top = \\tfrac32\\,x W^\\top - \\tfrac12\\,((x W^\\top) W) W^\\top`: three
    (N × d × d) products instead of two (d × d × d) ones, which is cheaper when the batch
    N is smaller than the width d. :math:`\\|Q\\|_2 \\le 1` when :math:`\\sigma_{\\max}(W) \\le 2`
    (:func:`bjorck_step`).

    Shape: x (*, in), w (out, in) -> (*, out).
    """
    xw = x @ w.mT  # (*, out)
    y = 1.5 * xw - 0.5 * ((xw @ w) @ w.mT)  # (*, out)
    if bias is not None:
        y = y + bias
    return y


def spectral_norm_exact(w: Tensor) -> Tensor:
    """:math:`\\sigma_{\\max}(W)` by SVD in float64 (exact to float64 rounding).

    Shape: (out, in) -> scalar, in ``w.dtype``.
    """
    return torch.linalg.matrix_norm(w.detach().double(), ord=2).to(w.dtype)


def rounding_margin(w: Tensor, dtype: torch.dtype) -> float:
    r""":math:`\delta` such that rounding any matrix :math:`(1-\delta)\,W'` with
    :math:`\|W'\|_2 \le 1` and :math:`\|W'\|_F \le \|W\|_F` to ``dtype`` keeps
    :math:`\|\cdot\|_2 \le 1`.

    Rounding to nearest perturbs each entry by at most :math:`u|w_{ij}|` (:math:`u` = half the
    machine epsilon of ``dtype``: :math:`2^{-24}` for float32), so the spectral norm moves by at
    most :math:`\|\Delta\|_2 \le \|\Delta\|_F \le u\,\|W\|_F`; plus 1e-12 for the float64
    SVD that measured :math:`\|W'\|_2`.

    Shape: (out, in) -> float.
    """
    u = torch.finfo(dtype).eps / 2 if dtype != torch.float64 else 0.0
    return u * float(torch.linalg.matrix_norm(w.detach().double())) + 1e-12


@torch.no_grad()
def unit_norm_cast(w: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    r"""``w`` scaled by :math:`\min(1, (1-\delta)/\sigma_{\max}(w))` and rounded to ``dtype``
    (default: ``w.dtype``), so that the matrix **as stored** has :math:`\sigma_{\max} \le 1`.

    :math:`\sigma_{\max}` is the float64 SVD of ``w`` and :math:`\delta` is
    :func:`rounding_margin`: a polar factor or :math:`W/\sigma_{\max}(W)` computed in float32
    applies, as rounded, :math:`\sigma_{\max} = 1 + O(10^{-7})` (measured: up to
    :math:`1 + 1.1\cdot 10^{-7}`); after this cast it is at most 1, at the price of a relative
    shrink :math:`\delta \approx 2^{-24}\|w\|_F` (about 1e-6 for a 512×512 orthogonal matrix).

    Shape: (out, in) -> (out, in), no gradient.
    """
    dtype = w.dtype if dtype is None else dtype
    w64 = w.detach().double()
    sigma = float(torch.linalg.matrix_norm(w64, ord=2))
    if sigma == 0.0:
        return w64.to(dtype)
    scale = min(1.0, (1.0 - rounding_margin(w64, dtype)) / sigma)
    return (w64 * scale).to(dtype)


@torch.no_grad()
def power_iteration(w: Tensor, u: Tensor, v: Tensor, *, n_iter: int = 1) -> None:
    """Update the persistent singular vectors ``u`` (out,), ``v`` (in,) of ``w`` in place.

    :math:`v \\leftarrow W^\\top u / \\|W^\\top u\\|`, :math:`u \\leftarrow W v / \\|W v\\|`.
    Then :math:`\\hat\\sigma = u^\\top W v \\le \\sigma_{\\max}(W)` (a lower bound that converges
    to it).
    """
    for _ in range(n_iter):
        v.copy_(F.normalize(w.mT @ u, dim=0, eps=1e-12))
        u.copy_(F.normalize(w @ v, dim=0, eps=1e-12))


_ORTHO_TOL = 1e-12  # ‖QᵀQ − I‖_F above which Cholesky QR takes a second pass


def _cholesky_qr(a: Tensor) -> Tensor:
    """Q = A R^{-1}, RᵀR = AᵀA + jitter (Cholesky QR). (*, m, n), m >= n."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    gram = a.mT @ a  # (*, n, n)
    jitter = 1e-14 * gram.diagonal(dim1=-2, dim2=-1).mean(-1) + torch.finfo(a.dtype).tiny
    chol = torch.linalg.cholesky_ex(gram + jitter[..., None, None] * eye).L  # (*, n, n)
    return torch.linalg.solve_triangular(chol, a.mT, upper=False).mT  # A L^{-T}: (*, m, n)


def cholesky_orthonormalize(w: Tensor, *, refine: bool = True) -> Tensor:
    """Orthonormalise the columns (rows, for a wide matrix) of ``w`` by Cholesky QR.

    :math:`W = QR` with :math:`R^\\top R = W^\\top W` (Cholesky), :math:`Q = W R^{-1}`:
    no iteration to converge, smooth, and :math:`\\operatorname{span} Q =
    \\operatorname{span} W`. The orthogonality error of one pass is about
    :math:`\\kappa(W)^2 \\epsilon`; when it exceeds 1e-12 a second pass ("CholeskyQR2")
    brings it down to :math:`\\epsilon` (float64: ~1e-15 for :math:`\\kappa \\lesssim 10^6`)
    unless ``refine=False`` (no second pass, and no host synchronisation: for well-conditioned
    latents, e.g. retracted ones). A relative jitter of 1e-14 on the Gram diagonal keeps
    rank-deficient inputs finite. The result is divided by :math:`\\sqrt{1+e}`,
    :math:`e = \\|Q^\\top Q - I\\|_F` (no gradient), so :math:`\\sigma_{\\max}(Q) \\le 1` holds
    for *any* input, whatever its conditioning.

    Shape: (*, m, n) -> (*, m, n).
    """
    wide = w.shape[-2] < w.shape[-1]
    a = w.mT if wide else w  # (*, m, n), m >= n
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)

    def error(q: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.linalg.matrix_norm(q.mT @ q - eye)  # (*,)

    q = _cholesky_qr(a)
    err = error(q)
    if refine and q.numel() and float(err.max()) > _ORTHO_TOL:  # ill-conditioned: 2nd pass
        q = _cholesky_qr(q)
        err = error(q)
    q = q / torch.sqrt(1 + err)[..., None, None]
    return q.mT if wide else q


def float32_cast_margin(kernel: Tensor) -> float:
    """:math:`\\delta` such that rounding ``(1-\\delta) K`` to float32 keeps a convolution of norm
    ≤ 1 below 1.

    The rounding perturbs each entry by at most :math:`u = 2^{-24}` relatively, so the operator
    norm moves by at most :math:`u \\sum_{t} \\|K_t\\|_F` (triangle inequality over the taps t).
    Plus 1e-12 for the float64 SVD of the bound.
    """
    taps = kernel.detach().double().flatten(2).permute(2, 0, 1)  # (k², O, C)
    return 2.0 ** -24 * float(torch.linalg.matrix_norm(taps).sum()) + 1e-12
