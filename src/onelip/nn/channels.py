# SPDX-License-Identifier: MIT
r"""Channel padding and selection, the isometry and the projection of the ConvNets of Prach
et al. (CVPR 2024): :class:`ZeroChannelPad` (append zero channels: an isometry, norm 1) and
:class:`FirstChannels` (keep the first channels: an orthogonal projection, norm 1)."""

from __future__ import annotations

import torch.nn.functional as TF
from torch import Tensor

from onelip.nn._base import LipschitzModule

__all__ = ["FirstChannels", "ZeroChannelPad"]


class _ChannelCount(LipschitzModule):
    """A parameter-free layer set by one channel count (``channels`` ≥ 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"Expected channels >= 1, but got channels={channels}")
        self.channels = int(channels)

    def extra_repr(self) -> str:
        return f"{self.channels}"


class ZeroChannelPad(_ChannelCount):
    r"""Append zero channels up to ``channels``: :math:`x \mapsto (x, 0)`, an isometry.

    Args:
        channels: C_out ≥ C_in, the number of channels after padding.

    Shape:
        :math:`(N, C_{in}, *) \to (N, C_{out}, *)`.

    Example:
        >>> pad = ZeroChannelPad(4)
        >>> x = torch.randn(2, 3, 5, 5)
        >>> bool(torch.equal(pad(x).norm(), x.norm()))
        True
    """

    def lipschitz_bound(self) -> float:
        return 1.0  # an isometry: ‖(x, 0)‖ = ‖x‖

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if c > self.channels:
            raise ValueError(f"ZeroChannelPad({self.channels}) got {c} channels; it only adds "
                             "channels")
        pad = [0, 0] * (x.dim() - 2) + [0, self.channels - c]  # last pair pads dim 1
        return TF.pad(x, pad)



class FirstChannels(_ChannelCount):
    r"""Keep the first ``channels`` channels: :math:`x \mapsto x_{1..c}`, an orthogonal
    projection (norm 1).

    Args:
        channels: the number of channels kept.

    Shape:
        :math:`(N, C, *) \to (N, c, *)`, c ≤ C.
    """

    def lipschitz_bound(self) -> float:
        return 1.0  # a coordinate projection

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] < self.channels:
            raise ValueError(f"FirstChannels({self.channels}) got only {x.shape[1]} channels")
        return x[:, :self.channels]



