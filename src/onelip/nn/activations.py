# SPDX-License-Identifier: MIT
"""1-Lipschitz, gradient-norm-preserving activations."""

from __future__ import annotations

import torch
from torch import Tensor

from onelip import functional as F
from onelip.nn._base import LipschitzModule

__all__ = ["Abs", "BetaAbs", "FullSort", "GroupSort", "MaxMin"]


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


class BetaAbs(LipschitzModule):
    r"""β-Abs (LipNeXt, Hu, Hu, Fredrikson, ICLR 2026): :math:`|x_i|` on the first
    :math:`\lfloor \beta C\rfloor` channels, :math:`x_i` on the others.

    Norm preserving and 1-Lipschitz (:math:`\big||a| - |b|\big| \le |a - b|` per coordinate),
    gradient-norm preserving (a diagonal ±1 Jacobian); with a suitable orthogonal R,
    :math:`\mathrm{MaxMin}(x) = R^\top \beta\text{-Abs}(Rx)` at β = ½.

    Args:
        beta: β ∈ [0, 1], the fraction of channels taken in absolute value. Default: 0.5.
        dim: the channel dimension. Default: 1.

    Shape:
        :math:`(N, C, *) \to (N, C, *)`.

    Example:
        >>> BetaAbs(0.5)(torch.tensor([[-1.0, -2.0, -3.0, -4.0]]))
        tensor([[ 1.,  2., -3., -4.]])
    """

    def __init__(self, beta: float = 0.5, *, dim: int = 1) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"Expected beta in [0, 1], but got beta={beta}")
        self.beta = float(beta)
        self.dim = dim

    def lipschitz_bound(self) -> float:
        return 1.0  # |·| or the identity per coordinate

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[self.dim]
        k = int(self.beta * n)
        if k == 0:
            return x
        return torch.cat((x.narrow(self.dim, 0, k).abs(), x.narrow(self.dim, k, n - k)),
                         self.dim)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, dim={self.dim}"
