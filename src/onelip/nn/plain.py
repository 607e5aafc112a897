# SPDX-License-Identifier: MIT
"""What onelip layers export to, and the one walker that exports a module tree.

Every constrained layer (a :class:`~onelip.nn.LipschitzModule` with parameters or buffers)
owns an ``export()`` method that returns plain modules computing its **eval-mode** function:
``nn.Linear`` / ``nn.Conv2d`` with folded weights (built by :func:`plain_linear` and
:func:`plain_conv`), parameter-free onelip modules, :class:`Residual`, :class:`ChannelShift`,
or an ``nn.Sequential`` of those. :func:`export_tree` only walks the tree: it never knows
about a particular layer, so a new layer's export lives in its own class.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn

from onelip.nn._base import LipschitzModule

__all__ = ["ChannelShift", "Residual", "export_tree", "own_tensors", "plain_conv",
           "plain_linear"]


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


@torch.no_grad()
def export_tree(m: nn.Module) -> nn.Module:
    """A new module tree of plain layers computing ``m``'s eval-mode function.

    The one rule, in order:

    1. ``DataParallel``, ``DistributedDataParallel`` and ``torch.compile`` wrappers are
       unwrapped;
    2. a onelip layer (:class:`~onelip.nn.LipschitzModule`) that defines ``export()`` returns
       it; one with parameters or buffers and no ``export()`` is an error, never a silent copy;
    3. containers (``nn.Sequential`` and its subclasses that keep its ``forward``,
       ``nn.ModuleList``, ``nn.ModuleDict``) become the plain container of exported children;
    4. any other module without tensors of its own (activations, pooling, ``nn.Flatten``, a
       user's wrapper that only *calls* its children) and any plain torch leaf (``nn.Linear``,
       ``nn.Conv2d``, …) is copied, its children exported.

    Raises:
        TypeError: a constrained layer without ``export()``, or a module with tensors of its
            own *and* children (its ``forward`` may read its children's weights).
    """
    if isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return export_tree(m.module)
    if hasattr(m, "_orig_mod") and type(m).__name__ == "OptimizedModule":  # torch.compile
        return export_tree(m._orig_mod)
    own = own_tensors(m)
    if isinstance(m, LipschitzModule):
        if callable(getattr(type(m), "export", None)):
            return m.export()
        if own:
            raise TypeError(
                f"{type(m).__name__} has parameters or buffers ({', '.join(own)}) but no "
                "export(): give it an export() method returning plain modules"
            )
    if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
        return nn.Sequential(OrderedDict((k, export_tree(c)) for k, c in m.named_children()))
    if type(m) is nn.ModuleList:
        return nn.ModuleList(export_tree(c) for c in m)
    if type(m) is nn.ModuleDict:
        return nn.ModuleDict({k: export_tree(c) for k, c in m.items()})
    children = list(m.named_children())
    if own and children:
        raise TypeError(
            f"Cannot export {type(m).__name__}: it has its own tensors ({', '.join(own)}) and "
            "children; give it an export() method"
        )
    memo = {id(c): None for c in m.children()}  # copy the shell, not the children
    new = copy.deepcopy(m, memo)
    for name, child in children:
        setattr(new, name, export_tree(child))
    return new
