# SPDX-License-Identifier: MIT
"""Activations: GroupSort (MaxMin when the group has 2 channels) and FullSort.

Each is a permutation of its input on every linear piece: 1-Lipschitz and gradient-norm
preserving (Anil et al., ICML 2019).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "full_sort",
    "group_sort",
]


def group_sort(x: Tensor, *, group_size: int = 2, dim: int = 1) -> Tensor:
    """Sort each group of ``group_size`` consecutive channels along ``dim`` (ascending).

    On each linear piece GroupSort is a permutation matrix, so it is 1-Lipschitz and
    gradient-norm preserving (Anil et al., ICML 2019). ``group_size=2`` is MaxMin.

    Shape: :math:`(N, C, *) \\to (N, C, *)` with ``C % group_size == 0``.
    """
    c = x.shape[dim]
    if group_size < 1 or c % group_size != 0:
        raise ValueError(
            f"Expected group_size to divide the {c} channels of dim {dim}, "
            f"but got group_size={group_size}"
        )
    if group_size == 1:
        return x
    dim = dim % x.dim()
    shape = x.shape
    g = x.reshape(*shape[:dim], c // group_size, group_size, *shape[dim + 1 :])  # (.., C/g, g, ..)
    if group_size == 2:
        a, b = g.unbind(dim + 1)
        out = torch.stack((torch.minimum(a, b), torch.maximum(a, b)), dim=dim + 1)
    else:
        out = torch.sort(g, dim=dim + 1).values
    return out.reshape(shape)


def full_sort(x: Tensor, *, dim: int = 1) -> Tensor:
    """Sort all channels along ``dim``: GroupSort with one group. 1-Lipschitz."""
    return torch.sort(x, dim=dim).values
