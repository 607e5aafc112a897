# SPDX-License-Identifier: MIT
r"""Per-channel input standardisation inside the model, with its Lipschitz bound."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from onelip.nn._base import LipschitzModule

__all__ = ["Normalize"]


class Normalize(LipschitzModule):
    r"""Standardise each channel: :math:`y_c = (x_c - \mu_c)/\sigma_c`.

    A diagonal linear map plus a translation, so its L2 Lipschitz constant is exactly
    :math:`1/\min_c \sigma_c` (not :math:`1/\max_c\sigma_c`, which is right only when every
    :math:`\sigma_c` is equal). Put it first in a network of 1-Lipschitz layers and the network
    is :math:`(1/\min\sigma)`-Lipschitz **in pixel space**: certificates computed with
    :func:`onelip.certify.lipschitz_bound` are radii in pixel units (ε = 36/255 for CIFAR-10),
    as the field reports them. The reported bound is rounded up to cover float32 rounding of
    the division.

    Args:
        mean: :math:`\mu`, one value per channel.
        std: :math:`\sigma > 0`, one value per channel.

    Shape:
        :math:`(N, C, *) \to (N, C, *)`.

    Example:
        >>> norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.5, 1.0])
        >>> norm.lipschitz_bound() >= 4.0
        True
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() < 1:
            raise ValueError(f"Expected one mean and one std per channel, but got {mean_t.numel()} "
                             f"and {std_t.numel()}")
        if not (torch.isfinite(std_t).all() and (std_t > 0).all()
                and torch.isfinite(mean_t).all()):
            raise ValueError(f"Expected finite mean and positive finite std, but got std={std}")
        self.mean = tuple(float(m) for m in mean_t)
        self.std = tuple(float(s) for s in std_t)
        self.register_buffer("_mean", mean_t, persistent=False)
        self.register_buffer("_inv_std", 1.0 / std_t, persistent=False)

    def lipschitz_bound(self) -> float:
        # max_c of the applied factor 1/σ_c (float32), rounded up by 2^-20 relative.
        return float(self._inv_std.double().max()) * (1 + 2.0 ** -20)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != len(self.std):
            raise ValueError(f"Normalize expected input of shape (N, {len(self.std)}, *), but "
                             f"got {tuple(x.shape)}")
        view = (1, -1) + (1,) * (x.dim() - 2)
        mean = self._mean.to(x.dtype).view(view)
        inv = self._inv_std.to(x.dtype).view(view)
        return (x - mean) * inv

    @torch.no_grad()
    def export(self) -> nn.Module:
        """A depthwise 1×1 ``nn.Conv2d`` (weight 1/σ, bias −μ/σ) for image inputs."""
        c = len(self.std)
        conv = nn.Conv2d(c, c, 1, groups=c, bias=True, device=self._mean.device,
                         dtype=self._mean.dtype)
        conv.weight.copy_(self._inv_std.view(c, 1, 1, 1))
        conv.bias.copy_(-self._mean * self._inv_std)
        return conv

    def extra_repr(self) -> str:
        return f"mean={list(self.mean)}, std={list(self.std)}"
