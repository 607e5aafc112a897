# SPDX-License-Identifier: MIT
""":func:`to_plain`: a model of plain torch layers computing a onelip model's eval-mode
function. The walk itself is :func:`onelip.nn.export_tree`; each layer's ``export()`` says
what it becomes."""

from __future__ import annotations

import torch
from torch import nn

from onelip.nn import LipschitzModule
from onelip.nn.plain import own_tensors
from onelip.nn.utils import export_tree

__all__ = ["to_plain"]


@torch.no_grad()
def to_plain(model: nn.Module) -> nn.Module:
    r"""A new model of plain torch layers computing ``model``'s eval-mode function.

    Constrained layers become ``nn.Linear`` / ``nn.Conv2d`` holding their folded weight
    (``effective_weight()``: polar factor, :math:`W/\sigma_{\max}`, …); onelip's
    parameter-free activations and pooling are copied; containers keep their structure
    (``onelip.nn.Sequential`` becomes ``nn.Sequential``); ``DistributedDataParallel``,
    ``DataParallel`` and ``torch.compile`` wrappers are unwrapped. ``model`` is not modified
    (its training mode and weights stay as they were).

    The plain model is in eval mode, on the device and in the dtype of ``model``; in float32
    its outputs equal the eval-mode outputs of ``model`` within 1e-6 (the same ops on the same
    weights: in practice bit for bit).

    Raises:
        TypeError: a module with constrained weights that has no ``export()`` (see
            :func:`onelip.nn.export_tree` for the rule).

    Example:
        >>> from onelip import nn as onn
        >>> net = onn.Sequential(onn.OrthoLinear(4, 8), onn.GroupSort(2), onn.OrthoLinear(8, 2))
        >>> plain = to_plain(net)
        >>> x = torch.randn(3, 4)
        >>> bool((plain(x) - net.eval()(x)).abs().max() < 1e-6)
        True
    """
    plain = export_tree(model)
    leftover = [type(m).__name__ for m in plain.modules()
                if isinstance(m, LipschitzModule) and own_tensors(m)]
    assert not leftover, f"exporters returned constrained layers: {leftover}"
    return plain.eval()
