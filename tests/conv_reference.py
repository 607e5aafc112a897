# SPDX-License-Identifier: MIT
"""Reference probes of a convolution's operator norm used only by the tests (moved out of
``onelip.functional``): power iteration on TᵀT and a Lanczos start vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def conv2d_power_iteration(kernel: Tensor, v: Tensor, *, stride: int = 1, padding: int = 0,
                           n_iter: int = 1) -> None:
    """Power iteration on :math:`T^\\top T` for :math:`T = ` ``conv2d(·, kernel, stride,
    padding)``, updating the unit input-space vector ``v`` in place
    (:math:`T^\\top` is ``conv_transpose2d``). Afterwards :math:`\\|Tv\\| \\le \\|T\\|` is a lower
    bound that converges to it.

    Shape: kernel (C_out, C_in, kh, kw), v (1, C_in, H, W).
    """
    for _ in range(n_iter):
        t = _conv2d_gram_apply(kernel, v, stride, padding)  # (1, C_in, H, W)
        v.copy_(t / t.norm().clamp_min(1e-30))


def _conv2d_gram_apply(kernel: Tensor, v: Tensor, stride: int, padding: int) -> Tensor:
    """:math:`T^\\top T v` for T = conv2d(·, kernel, stride, padding). v (1, C_in, H, W)."""
    h, w = v.shape[-2:]
    u = F.conv2d(v, kernel, stride=stride, padding=padding)  # (1, C_out, H', W')
    oh = h - ((u.shape[-2] - 1) * stride - 2 * padding + kernel.shape[-2])
    ow = w - ((u.shape[-1] - 1) * stride - 2 * padding + kernel.shape[-1])
    return F.conv_transpose2d(u, kernel, stride=stride, padding=padding,
                              output_padding=(oh, ow))  # (1, C_in, H, W)


@torch.no_grad()
def conv2d_top_singular_vector(kernel: Tensor, v0: Tensor, *, stride: int = 1,
                               padding: int = 0, n_iter: int = 60) -> Tensor:
    """The top right singular vector of ``conv2d(·, kernel, stride, padding)``, by Lanczos on
    :math:`T^\\top T` (``n_iter`` steps, full reorthogonalisation) from ``v0``.

    The padded operator's top singular values are nearly degenerate, so power iteration
    converges slowly (relative error ~1e-3 after 100 steps at 64 channels, 32×32); Lanczos
    reaches ~1e-5 in 60 steps. Used to start :func:`conv2d_power_iteration`.

    Shape: kernel (C_out, C_in, kh, kw), v0 (1, C_in, H, W) -> unit vector (1, C_in, H, W).
    """
    basis = [(v0 / v0.norm()).flatten()]  # orthonormal Krylov basis
    alpha: list[float] = []
    beta: list[float] = []
    for _ in range(n_iter):
        w = _conv2d_gram_apply(kernel, basis[-1].view_as(v0), stride, padding).flatten()
        alpha.append(float(basis[-1] @ w))
        q = torch.stack(basis)  # (j, d)
        for _ in range(2):  # full reorthogonalisation, twice
            w = w - q.mT @ (q @ w)
        b = float(w.norm())
        if b <= 1e-12 * max(abs(alpha[-1]), 1e-300):
            break
        beta.append(b)
        basis.append(w / b)
    m = len(alpha)
    tri = torch.diag(torch.tensor(alpha, dtype=torch.float64))  # (m, m) tridiagonal
    off = torch.tensor(beta[:m - 1], dtype=torch.float64)
    tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    y = torch.linalg.eigh(tri).eigenvectors[:, -1].to(v0.dtype)  # top Ritz vector
    v = (torch.stack(basis[:m]).mT @ y).view_as(v0)
    return v / v.norm()
