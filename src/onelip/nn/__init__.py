# SPDX-License-Identifier: MIT
"""1-Lipschitz layers (``torch.nn.Module`` subclasses) and the plain modules they export to.

A onelip layer is an instance of :class:`LipschitzModule`: it states its bound
(``lipschitz_bound()``, abstract) and, when it holds weights, its plain twin (``export()``).
Layers with weights follow the contract of :class:`ConstrainedLayer` (``docs/architecture.md``
shows how to add one). The families that models choose by name are listed once, here:
:data:`DENSE_LAYERS` and :data:`CONV_LAYERS`.

The utilities that work on layers (``retract_``, the kernel builds, ``eval_mode``,
``full_precision``, ``float32_forward``, ``export_tree``) live in :mod:`onelip.nn.utils`;
their old names here still work until 0.4, with a ``DeprecationWarning``.
This package imports only :mod:`onelip.functional` and the private leaves.
"""

from __future__ import annotations

import warnings
from types import MappingProxyType

from onelip.nn._base import (
    ConstrainedLayer,
    ConvLayer,
    DenseLayer,
    LipschitzModule,
    check_bound_applies,
)
from onelip.nn.activations import Abs, BetaAbs, FullSort, GroupSort, MaxMin
from onelip.nn.aol import AOLConv2d, AOLLinear
from onelip.nn.bro import BROConv2d, BROLinear
from onelip.nn.channels import FirstChannels, ZeroChannelPad
from onelip.nn.conv import OrthoConv2d, SpectralConv2d
from onelip.nn.cpl import CPLConv2d, CPLLinear
from onelip.nn.linear import FrobeniusLinear, OrthoLinear, SpectralLinear
from onelip.nn.liresnet import LiResConv2d
from onelip.nn.normalization import BatchCentering, LayerCentering
from onelip.nn.normalize import Normalize
from onelip.nn.plain import ChannelShift, Residual
from onelip.nn.pooling import (
    Flatten,
    GlobalL2NormPool2d,
    InvertibleDownsample,
    L2NormPool2d,
    ScaledAvgPool2d,
    ToImage,
)
from onelip.nn.residual import ConvexResidual, SLLBlock, SLLConv2d
from onelip.nn.rko import RKOConv2d
from onelip.nn.sequential import Sequential, module_lipschitz_bound
from onelip.nn.shift import PositionBias, ShiftConv2d, SpatialShift
from onelip.nn.soc import ConvSeries2d, SOCConv2d

# ==== the families models choose by name (``layer=`` of onelip.models) ======================
# A new family: its file under nn/, its import above and one line in one of these tables.

DENSE_LAYERS: MappingProxyType[str, type[ConstrainedLayer]] = MappingProxyType({
    "ortho": OrthoLinear,
    "spectral": SpectralLinear,
    "aol": AOLLinear,
    "cpl": CPLLinear,
    "bro": BROLinear,
})
"""Dense families by name (``MLPConfig.layer``), each built by ``cls.for_shape(in, out)``
(docs/layers.md: the math, the claim and the cost of each)."""

CONV_LAYERS: MappingProxyType[str, type[ConstrainedLayer]] = MappingProxyType({
    "ortho": OrthoConv2d,
    "spectral": SpectralConv2d,
    "sll": SLLConv2d,
    "aol": AOLConv2d,
    "cpl": CPLConv2d,
    "soc": SOCConv2d,
    "bro": BROConv2d,
    "liresnet": LiResConv2d,
    "shift": ShiftConv2d,
    "rko": RKOConv2d,
})
"""Convolution families by name (``layer=`` of the convolutional models), each built by
``cls.for_shape(c_in, c_out, k, stride=s, input_size=(H, W))`` (docs/layers.md); 'sll' is a
residual block and takes only c_in = c_out, stride 1."""

__all__ = [
    "AOLConv2d",
    "AOLLinear",
    "Abs",
    "BROConv2d",
    "BROLinear",
    "BatchCentering",
    "BetaAbs",
    "CONV_LAYERS",
    "CPLConv2d",
    "CPLLinear",
    "ChannelShift",
    "ConstrainedLayer",
    "ConvLayer",
    "ConvSeries2d",
    "ConvexResidual",
    "DENSE_LAYERS",
    "DenseLayer",
    "FirstChannels",
    "Flatten",
    "FrobeniusLinear",
    "FullSort",
    "GlobalL2NormPool2d",
    "GroupSort",
    "InvertibleDownsample",
    "L2NormPool2d",
    "LayerCentering",
    "LiResConv2d",
    "LipschitzModule",
    "MaxMin",
    "Normalize",
    "OrthoConv2d",
    "OrthoLinear",
    "PositionBias",
    "RKOConv2d",
    "Residual",
    "SLLBlock",
    "SLLConv2d",
    "ShiftConv2d",
    "SOCConv2d",
    "ScaledAvgPool2d",
    "Sequential",
    "SpatialShift",
    "SpectralConv2d",
    "SpectralLinear",
    "ToImage",
    "ZeroChannelPad",
    "check_bound_applies",
    "module_lipschitz_bound",
]

# ==== names that moved to onelip.nn.utils in 0.3 (importable here until 0.4) ================
_MOVED = frozenset({"batched_kernel_build", "eval_mode", "export_tree", "float32_forward",
                    "full_precision", "retract_", "serial_kernel_build"})


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(f"onelip.nn.{name} moved to onelip.nn.utils.{name} in 0.3; the old name "
                      "goes in 0.4", DeprecationWarning, stacklevel=2)
        from onelip.nn import utils

        return getattr(utils, name)
    if name == "retract_ortho_convs_":
        from onelip.nn.conv import retract_ortho_convs_

        return retract_ortho_convs_
    raise AttributeError(f"module 'onelip.nn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
