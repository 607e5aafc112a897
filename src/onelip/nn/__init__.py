# SPDX-License-Identifier: MIT
"""1-Lipschitz layers (``torch.nn.Module`` subclasses) and the plain modules they export to.

A onelip layer is an instance of :class:`LipschitzModule`: it states its bound
(``lipschitz_bound()``, abstract) and, when it holds weights, its plain twin (``export()``).
This package imports only :mod:`onelip.functional` and the private leaves.
"""

from __future__ import annotations

from torch import nn

from onelip.nn._base import (
    LipschitzModule,
    check_bound_applies,
    eval_mode,
    float32_forward,
    full_precision,
)
from onelip.nn.activations import Abs, FullSort, GroupSort, MaxMin
from onelip.nn.channels import FirstChannels, ZeroChannelPad
from onelip.nn.conv import (
    OrthoConv2d,
    SpectralConv2d,
    batched_kernel_build,
    retract_ortho_convs_,
    serial_kernel_build,
)
from onelip.nn.linear import FrobeniusLinear, OrthoLinear, SpectralLinear
from onelip.nn.normalization import BatchCentering, LayerCentering
from onelip.nn.normalize import Normalize
from onelip.nn.plain import ChannelShift, Residual, export_tree
from onelip.nn.pooling import (
    Flatten,
    GlobalL2NormPool2d,
    InvertibleDownsample,
    L2NormPool2d,
    ScaledAvgPool2d,
    ToImage,
)
from onelip.nn.residual import ConvexResidual, SLLBlock, SLLConv2d
from onelip.nn.sequential import Sequential, module_lipschitz_bound

__all__ = [
    "Abs",
    "BatchCentering",
    "ChannelShift",
    "ConvexResidual",
    "FirstChannels",
    "Flatten",
    "FrobeniusLinear",
    "FullSort",
    "GlobalL2NormPool2d",
    "GroupSort",
    "InvertibleDownsample",
    "L2NormPool2d",
    "LayerCentering",
    "LipschitzModule",
    "MaxMin",
    "Normalize",
    "float32_forward",
    "full_precision",
    "OrthoConv2d",
    "OrthoLinear",
    "Residual",
    "SLLBlock",
    "SLLConv2d",
    "ScaledAvgPool2d",
    "Sequential",
    "SpectralConv2d",
    "SpectralLinear",
    "ToImage",
    "ZeroChannelPad",
    "batched_kernel_build",
    "check_bound_applies",
    "eval_mode",
    "export_tree",
    "module_lipschitz_bound",
    "retract_",
    "serial_kernel_build",
]


def retract_(model: nn.Module) -> None:
    """Call ``retract_()`` on every submodule that has one (after an optimiser step).

    Retraction moves latent weights towards their constrained values without changing the
    function computed in eval mode; it keeps the fast training forward close to exact. The
    :class:`OrthoConv2d` layers of equal latent shapes are retracted together, in one batched
    float64 Cholesky QR per latent (:func:`~onelip.nn.conv.retract_ortho_convs_`).
    """
    convs = []
    for m in model.modules():
        fn = getattr(m, "retract_", None)
        if isinstance(m, OrthoConv2d) and type(m).retract_ is OrthoConv2d.retract_:
            convs.append(m)
        elif isinstance(m, LipschitzModule) and callable(fn):
            fn()
    retract_ortho_convs_(convs)
