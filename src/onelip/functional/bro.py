# SPDX-License-Identifier: MIT
"""Block reflectors (BRO, Lai et al. 2025): :math:`W = I - 2V(V^HV + \\varepsilon I)^{-1}V^H`,
dense and per frequency of a convolution."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bro_factor", "bro_symbol_factor"]


def bro_factor(v: Tensor, *, eps: float) -> Tensor:
    r"""Y with :math:`YY^H = V(V^HV + \varepsilon I)^{-1}V^H`, so that the block reflector is
    :math:`W = I - 2YY^H`: :math:`Y = V L^{-H}`, :math:`LL^H = V^HV + \varepsilon I`
    (Cholesky: one r×r factorisation and a triangular solve, no iteration).
    :math:`\varepsilon` = ``eps`` × the mean diagonal of :math:`V^HV` (per matrix).

    W is Hermitian with eigenvalues :math:`1 - 2\sigma_i^2/(\sigma_i^2 + \varepsilon) \in
    (-1, 1]` (σ_i the singular values of V) and 1 on the complement of range(V): a
    contraction for ε > 0, orthogonal (r eigenvalues −1) as ε → 0 (Proposition 1 of the
    paper). Differentiable; real or complex.

    Shape: (*, m, r) -> (*, m, r).
    """
    gram = v.mH @ v  # (*, r, r)
    diag = gram.diagonal(dim1=-2, dim2=-1).real.mean(-1)  # (*,)
    reg = eps * diag + torch.finfo(diag.dtype).tiny
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(gram + reg[..., None, None] * eye)  # (*, r, r) lower
    return torch.linalg.solve_triangular(chol, v.mH, upper=False).mH  # (*, m, r)


def bro_symbol_factor(kernel: Tensor, grid: tuple[int, int], *, eps: float) -> Tensor:
    r""":func:`bro_factor` of the symbol :math:`\hat V(\omega)` of ``kernel`` (zero-padded to
    the circular ``grid``) at the frequencies of the half grid (``rfft2``), in complex128.
    The reflector :math:`\hat W(\omega) = I - 2Y(\omega)Y(\omega)^H` depends only on the
    column span of :math:`\hat V(\omega)`, so where the kernel sits on the grid does not
    matter. Differentiable.

    Shape: kernel (C, r, k, k) -> (G_h, G_w/2+1, C, r), complex128.
    """
    sym = torch.fft.rfft2(kernel.double(), s=grid)  # (C, r, G_h, G_w')
    return bro_factor(sym.permute(2, 3, 0, 1), eps=eps)  # (G_h, G_w', C, r)
