# SPDX-License-Identifier: MIT
"""Pooling: scaled average pooling, L2-norm pooling, global L2-norm pooling and the
invertible (pixel-unshuffle) downsampling, with the exact operator norms they rely on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "avg_pool_norm",
    "global_l2_norm_pool2d",
    "invertible_downsample",
    "l2_norm_pool2d",
    "scaled_avg_pool2d",
]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def avg_pool_norm(kernel_size, stride=None, padding=0, input_size=None) -> float:
    """Exact operator norm of the window *sum* behind ``avg_pool2d(·, k, s, p) · k_h k_w``
    (``count_include_pad=True``).

    The operator is separable: the Kronecker product of two 1-D strided box sums, so its norm
    is the product of theirs. For infinite signals (``input_size=None``) the 1-D norm is
    :math:`\\sqrt{\\sum_r n_r^2}`, :math:`n_r = \\#\\{a < k : a \\equiv r \\bmod s\\}`
    (the polyphase symbol is maximal at frequency 0, all coefficients being positive): a bound
    for every input size, reached as the size grows. Non-overlapping windows (s = k) give
    :math:`\\sqrt k` per axis. With ``input_size`` the norm is the exact one of that size
    (SVD of the 1-D matrices).
    """
    ks, st, pd = _pair(kernel_size), _pair(stride if stride is not None else kernel_size), \
        _pair(padding)
    total = 1.0
    for i, (k, s, p) in enumerate(zip(ks, st, pd)):
        if input_size is None:
            counts = [len(range(r, k, s)) for r in range(min(s, k))]
            total *= math.sqrt(sum(c * c for c in counts))
        else:
            n = int(input_size[i])
            n_out = (n + 2 * p - k) // s + 1
            mat = torch.zeros(max(n_out, 0), n, dtype=torch.float64)
            for o in range(n_out):
                lo, hi = max(o * s - p, 0), min(o * s - p + k, n)
                if hi > lo:
                    mat[o, lo:hi] = 1.0
            total *= float(torch.linalg.matrix_norm(mat, ord=2)) if mat.numel() else 0.0
    return total


def scaled_avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0, *,
                      scale: float | None = None) -> Tensor:
    """Average pooling scaled to be 1-Lipschitz: :math:`\\frac{k_h k_w}{\\|S\\|}
    \\operatorname{avgpool}(x)`, :math:`\\|S\\|` the norm of the window sum
    (:func:`avg_pool_norm`; :math:`k` for non-overlapping k×k windows, i.e. avg × k).

    Shape: (N, C, H, W) -> (N, C, H', W').
    """
    ks = _pair(kernel_size)
    if scale is None:
        scale = ks[0] * ks[1] / avg_pool_norm(kernel_size, stride, padding)
    return F.avg_pool2d(x, kernel_size, stride, padding, count_include_pad=True) * scale


def l2_norm_pool2d(x: Tensor, kernel_size, stride=None, *, eps: float = 1e-12) -> Tensor:
    """Window L2 norms :math:`y = \\sqrt{\\|x_w\\|^2 + \\epsilon} - \\sqrt\\epsilon` (smooth at 0),
    divided by :math:`\\sqrt{c}`, c the largest number of windows covering one pixel
    (:math:`\\lceil k/s\\rceil` per axis; 1 for non-overlapping windows).

    Each window is 1-Lipschitz (:math:`v \\mapsto \\sqrt{\\|v\\|^2+\\epsilon}` is), so
    :math:`\\|N(x) - N(y)\\|^2 \\le \\sum_w \\|x_w - y_w\\|^2 \\le c\\,\\|x - y\\|^2`, with equality
    for y = 0, x an impulse (ε = 0): the factor is exact.

    Shape: (N, C, H, W) -> (N, C, H', W').
    """
    ks = _pair(kernel_size)
    st = _pair(stride if stride is not None else kernel_size)
    cover = math.prod(-(-k // s) for k, s in zip(ks, st))
    sq = F.avg_pool2d(x * x, ks, st) * (ks[0] * ks[1])  # window sums of squares
    out = torch.sqrt(sq + eps) - math.sqrt(eps)
    return out / math.sqrt(cover) if cover > 1 else out


def global_l2_norm_pool2d(x: Tensor, *, eps: float = 1e-12) -> Tensor:
    """Per-channel L2 norm over the spatial axes, :math:`\\sqrt{\\|x_c\\|^2+\\epsilon} -
    \\sqrt\\epsilon`: 1-Lipschitz (one window per channel).

    Shape: (N, C, H, W) -> (N, C).
    """
    return torch.sqrt(x.square().sum((-2, -1)) + eps) - math.sqrt(eps)


def invertible_downsample(x: Tensor, *, factor: int = 2) -> Tensor:
    """Pixel unshuffle: each factor×factor block becomes factor² channels. A permutation of
    the coordinates: orthogonal.

    Shape: (N, C, H, W) -> (N, C·f², H/f, W/f); H and W must be multiples of f.
    """
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"Expected spatial size divisible by factor={factor}, but got {h}x{w}"
        )
    return F.pixel_unshuffle(x, factor)
