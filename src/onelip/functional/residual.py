# SPDX-License-Identifier: MIT
"""SDP-based Lipschitz layers (SLL, Araujo et al., ICLR 2023): dense and convolutional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
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
    g = gram.abs()
    if g.dim() == 4:
        g = g.sum((-2, -1))  # (m, m)
    q = torch.exp(log_q)
    t = (g * q[None, :]).sum(1) / q  # (m,)
    return _safe_inv(t)


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
