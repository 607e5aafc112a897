# SPDX-License-Identifier: MIT
"""What onelip layers export to (the one walker that exports a module tree,
:func:`onelip.nn.utils.export_tree`, lives beside the other utilities).

Every constrained layer (a :class:`~onelip.nn.LipschitzModule` with parameters or buffers)
owns an ``export()`` method that returns plain modules computing its **eval-mode** function:
``nn.Linear`` / ``nn.Conv2d`` with folded weights (built by :func:`plain_linear` and
:func:`plain_conv`), parameter-free onelip modules, :class:`Residual`, :class:`ChannelShift`,
or an ``nn.Sequential`` of those. :func:`~onelip.nn.utils.export_tree` only walks the tree:
it never knows about a particular layer, so a new layer's export lives in its own class.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ChannelShift", "Residual", "own_tensors", "plain_conv", "plain_linear"]


class Residual(nn.Module):
    r"""Plain residual block :math:`y = a\,x + b\,\mathrm{body}(x)`: what residual layers
    (ConvexResidual: :math:`a = 1-\lambda, b = \lambda`; SLL: :math:`a = 1, b = -1` with the
    scaling folded into ``body``'s weights) export to.

    Args:
        body: plain module with output shape = input shape.
        skip: a, the factor of the identity branch. Default: 1.
        scale: b, the factor of the body. Default: 1.
    """

    def __init__(self, body: nn.Module, *, skip: float = 1.0, scale: float = 1.0) -> None:
        super().__init__()
        self.body = body
        self.skip = float(skip)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip * x + self.scale * self.body(x)

    def extra_repr(self) -> str:
        return f"skip={self.skip}, scale={self.scale}"


class ChannelShift(nn.Module):
    r"""Plain per-channel translation :math:`y = x + b` (b broadcast over axis 1): what
    :class:`onelip.nn.BatchCentering` exports to (:math:`b = \beta - \mu_{running}`).

    Shape:
        :math:`(N, C, *) \to (N, C, *)`.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.bias = nn.Parameter(torch.zeros(self.num_features))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view((1, -1) + (1,) * (x.dim() - 2))

    def extra_repr(self) -> str:
        return f"{self.num_features}"


@torch.no_grad()
def plain_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` applying ``weight`` (out, in) and ``bias`` (out,) (copies)."""
    out_f, in_f = weight.shape
    lin = nn.Linear(in_f, out_f, bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    lin.weight.copy_(weight)
    if bias is not None:
        lin.bias.copy_(bias)
    return lin


@torch.no_grad()
def plain_conv(layer: nn.Module, weight: Tensor, *, padding_mode: str = "zeros") -> nn.Conv2d:
    """An ``nn.Conv2d`` with ``layer``'s shape, stride, padding and bias, applying ``weight``
    (C_out, C_in, kh, kw)."""
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                     stride=layer.stride, padding=layer.padding, padding_mode=padding_mode,
                     bias=layer.bias is not None, device=weight.device, dtype=weight.dtype)
    conv.weight.copy_(weight)
    if layer.bias is not None:
        conv.bias.copy_(layer.bias)
    return conv


def own_tensors(m: nn.Module) -> list[str]:
    """Names of the parameters and buffers that ``m`` holds itself (not its children's)."""
    return [n for n, _ in m.named_parameters(recurse=False)] + [
        n for n, _ in m.named_buffers(recurse=False)
    ]
