# SPDX-License-Identifier: MIT
"""SDP-based Lipschitz layers (SLL, Araujo et al., ICLR 2023): dense and convolutional, and
the rounding of their eval-mode weights (:func:`sll_cast`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "sll_cast",
    "sll_conv2d",
    "sll_conv_gram",
    "sll_linear",
    "sll_scaling",
]


def _safe_inv(t: Tensor) -> Tensor:
    return torch.where(t > 0, 1 / t.clamp_min(1e-30), torch.zeros_like(t))


def sll_scaling(gram: Tensor, log_q: Tensor) -> Tensor:
    """The SLL diagonal :math:`T^{-1}` (Araujo et al., ICLR 2023, Thm 3).

    :math:`T_{ii} = \\sum_j |G_{ij}|\\, q_j / q_i` with :math:`G = W^\\top W` (for a convolution,
    :math:`|G_{ij}|` summed over the spatial offsets of the kernel autocorrelation),
    :math:`q = e^{\\text{log\\_q}} > 0`. Then :math:`T \\succeq W^\\top W` (a scaled
    Gershgorin bound) and :math:`x \\mapsto x - 2WT^{-1}\\sigma(W^\\top x + b)` is 1-Lipschitz
    for any slope-restricted σ in [0, 1] (ReLU).

    Shape: gram (m, m) or (m, m, kh, kw), log_q (m,) -> (m,) = 1 / T_ii (0 for a zero row).
    """
    return _safe_inv(_sll_diagonal(gram, log_q))


def _sll_diagonal(gram: Tensor, log_q: Tensor) -> Tensor:
    """:math:`T_{ii}` of :func:`sll_scaling`. (m, m) or (m, m, kh, kw), (m,) -> (m,)"""
    g = gram.abs()
    if g.dim() == 4:
        g = g.sum((-2, -1))  # (m, m)
    q = torch.exp(log_q)
    return (g * q[None, :]).sum(1) / q  # (m,)


def sll_linear(x: Tensor, weight: Tensor, bias: Tensor | None, log_q: Tensor) -> Tensor:
    """Dense SLL block :math:`y = x - 2 W T^{-1} \\operatorname{ReLU}(W^\\top x + b)`.

    Shape: x (*, d), weight (d, m) (W: features × inner units), bias (m,), log_q (m,)
    -> (*, d).
    """
    t_inv = sll_scaling(weight.mT @ weight, log_q)  # (m,)
    h = torch.relu(x @ weight + (bias if bias is not None else 0))  # (*, m)
    return x - 2 * (h * t_inv) @ weight.mT


def sll_conv_gram(kernel: Tensor) -> Tensor:
    """The kernel of :math:`W^\\top W` for W the transposed convolution of ``kernel``
    (i.e. :math:`T T^\\top`, T = conv2d(·, kernel)): autocorrelation over the offsets.

    Shape: (m, C, k, k) -> (m, m, 2k-1, 2k-1).
    """
    kh, kw = kernel.shape[-2:]
    return F.conv2d(kernel, kernel, padding=(kh - 1, kw - 1))


def sll_conv2d(x: Tensor, kernel: Tensor, bias: Tensor | None, log_q: Tensor, *,
               padding: int) -> Tensor:
    """Convolutional SLL block :math:`y = x - 2\\,T^\\top\\big(t \\odot
    \\operatorname{ReLU}(Tx + b)\\big)`, T = ``conv2d(·, kernel, padding)``, t the per-channel
    :func:`sll_scaling` of :func:`sll_conv_gram`. 1-Lipschitz with zero padding too: the padded
    Gram :math:`T T^\\top = R T_\\infty E E^\\top T_\\infty^\\top R^\\top \\preceq
    R\\,T_\\infty T_\\infty^\\top R^\\top \\preceq R\\,\\mathrm{diag}(t)^{-1} R^\\top` (E, R: the
    zero embedding and the crop; the last step is the scaled Gershgorin bound on the infinite
    Toeplitz Gram, whose entries are the autocorrelation).

    Shape: x (N, C, H, W), kernel (m, C, k, k) (odd k, padding (k-1)/2) -> (N, C, H, W).
    """
    t_inv = sll_scaling(sll_conv_gram(kernel), log_q)  # (m,)
    h = torch.relu(F.conv2d(x, kernel, bias, padding=padding))  # (N, m, H, W)
    return x - 2 * F.conv_transpose2d(h * t_inv[:, None, None], kernel, padding=padding)


@torch.no_grad()
def sll_cast(weight: Tensor, log_q: Tensor) -> tuple[float, Tensor]:
    r"""The eval-mode terms ``(a, V)`` of an SLL block, rounded to ``weight.dtype`` so that the
    block **as applied** is 1-Lipschitz: :math:`y = a\,x - V\operatorname{ReLU}(W^\top x + b)`
    (dense, ``weight`` W (d, m), V (d, m)) or :math:`y = a\,x - T_V^\top
    \operatorname{ReLU}(T_K x + b)` (convolution, ``weight`` K (m, C, k, k), V (m, C, k, k),
    :math:`T_V^\top` = ``conv_transpose2d(·, V)``).

    V is :math:`2a\,W T^{-1}` with T (:func:`sll_scaling`) computed in float64 from the weight
    as stored, then rounded. The rounding error E of V (:math:`|E| \le u|V|` entrywise,
    :math:`u = 2^{-24}` in float32) adds at most :math:`\|E\|\,\|T_K\|` to the norm of the
    Jacobian :math:`a(I - 2T_K^\top T^{-1} D T_K) - T_E^\top D T_K` (D the ReLU pattern), whose
    first term is at most a. So the identity is scaled by :math:`a = 1 - \eta` (a value of the
    dtype),

    .. math::
        \eta \ge u\,\Big\|\sum_{taps} |V|\Big\|_2 \sqrt{\max_i T_{ii}} + 10^{-9},

    using :math:`\|T_E\| \le \|\sum_{taps}|E|\|_2` (a convolution is bounded by the matrix
    of its absolute taps), :math:`\|T_K\|^2 \le \max_i T_{ii}` (:math:`T \succeq T_K T_K^\top`)
    and 1e-9 for the float64 arithmetic. η is about 1e-7–1e-6; for float64 weights
    :math:`a = 1` and V is not rounded.

    Shape: weight (d, m) or (m, C, k, k), log_q (m,) -> (float, weight's shape).
    """
    dtype = weight.dtype
    w = weight.detach().double()
    gram = w.mT @ w if w.dim() == 2 else sll_conv_gram(w)
    diag = _sll_diagonal(gram, log_q.detach().double())  # T_ii, (m,)
    t_inv = _safe_inv(diag)
    exact = 2 * w * (t_inv if w.dim() == 2 else t_inv[:, None, None, None])
    if dtype == torch.float64:
        return 1.0, exact
    u = torch.finfo(dtype).eps / 2
    taps = exact.abs() if w.dim() == 2 else exact.abs().sum((-2, -1))  # (d, m) or (m, C)
    norm_e = (u + 1e-15) * float(torch.linalg.matrix_norm(taps, ord=2)) * (1 + 1e-9)
    norm_k = math.sqrt(float(diag.max())) * (1 + 1e-9)
    eta = norm_e * norm_k + 1e-9
    # 1 − η − u rounds (to nearest) to a value of the dtype that is at most 1 − η.
    a = float(torch.tensor(1.0 - eta - u, dtype=torch.float64).to(dtype))
    return a, (a * exact).to(dtype)
