# SPDX-License-Identifier: MIT
"""1-Lipschitz, gradient-norm-preserving activations."""

from __future__ import annotations

import torch
from torch import Tensor

from onelip import functional as F
from onelip.nn._base import LipschitzModule

__all__ = ["Abs", "FullSort", "GroupSort", "MaxMin"]


class GroupSort(LipschitzModule):
    r"""Sort each group of ``group_size`` channels (Anil, Lucas & Grosse, ICML 2019).

    On each linear piece it is a permutation: 1-Lipschitz and gradient-norm preserving.

    Args:
        group_size: channels per group; must divide the channel count. Default: 2 (MaxMin).
        dim: the channel dimension. Default: 1.

    Shape:
        :math:`(N, C, *) \to (N, C, *)`.
    """

    def __init__(self, group_size: int = 2, *, dim: int = 1) -> None:
        super().__init__()
        if group_size < 1:
            raise ValueError(f"Expected group_size >= 1, but got group_size={group_size}")
        self.group_size = group_size
        self.dim = dim

    def lipschitz_bound(self) -> float:
        return 1.0  # a permutation on each linear piece

    def forward(self, x: Tensor) -> Tensor:
        return F.group_sort(x, group_size=self.group_size, dim=self.dim)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, dim={self.dim}"


class MaxMin(GroupSort):
    """GroupSort with groups of 2: (a, b) ↦ (min(a, b), max(a, b))."""

    def __init__(self, *, dim: int = 1) -> None:
        super().__init__(2, dim=dim)


class FullSort(LipschitzModule):
    """Sort all channels along ``dim``: 1-Lipschitz, gradient-norm preserving."""

    def __init__(self, *, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def lipschitz_bound(self) -> float:
        return 1.0  # a permutation on each linear piece

    def forward(self, x: Tensor) -> Tensor:
        return F.full_sort(x, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Abs(LipschitzModule):
    """Element-wise absolute value: 1-Lipschitz and gradient-norm preserving."""

    def lipschitz_bound(self) -> float:
        return 1.0  # |a| − |b| ≤ |a − b| per coordinate

    def forward(self, x: Tensor) -> Tensor:
        return torch.abs(x)
