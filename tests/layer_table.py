# SPDX-License-Identifier: MIT
"""The one table of onelip layers that the generic attacks run over (tests/test_layer_table.py,
tests/test_claims.py): every public layer of :mod:`onelip.nn` appears once.

The families that models choose by name (:data:`onelip.nn.DENSE_LAYERS`,
:data:`onelip.nn.CONV_LAYERS`) enter the table from those tables, built by their
``for_shape``: a new family is covered as soon as it has its line there. Every other public
layer has its line below; a public layer in neither place fails
``test_every_public_layer_is_in_the_table``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

import onelip.nn as onn

__all__ = ["CASES", "Case", "public_layers"]


@dataclass(frozen=True)
class Case:
    """A small instance of one layer and the batch it takes."""

    build: Callable[[], nn.Module]
    """A new float32 instance (seed torch first for a reproducible one)."""
    input_shape: tuple[int, ...]
    """(N, ...) of a batch the layer takes."""
    train_tol: float = 1e-5
    """How far above its bound the *training* forward may go (float32 rounding; the documented
    power-iteration lag of the spectral layers, whose eval mode is the certified one)."""


# The documented train-mode lag of power iteration (SpectralLinear: ≤ 1.05 tested,
# SpectralConv2d: ≤ 1.0015 measured) — eval mode, which certificates use, stays exact.
_POWER_ITERATION_LAG = 0.05

# Shapes at which the families of DENSE_LAYERS / CONV_LAYERS are built. 8×8 inputs give a
# 9 × 5 grid of 45 frequencies (more than the 40 that SpectralConv2d refreshes every step).
_DENSE = dict(in_features=5, out_features=4, input_shape=(3, 5))
_CONV = dict(in_channels=2, out_channels=3, input_size=(8, 8), input_shape=(2, 2, 8, 8))

_OTHERS: dict[str, Case] = {
    "Abs": Case(lambda: onn.Abs(), (2, 5)),
    "BatchCentering": Case(lambda: onn.BatchCentering(3), (4, 3, 2, 2)),
    "BetaAbs": Case(lambda: onn.BetaAbs(0.5), (2, 6)),
    "ConvexResidual": Case(
        lambda: onn.ConvexResidual(onn.OrthoLinear(4, 4), 0.3, learnable=True), (2, 4)),
    "FirstChannels": Case(lambda: onn.FirstChannels(2), (2, 3, 2, 2)),
    "Flatten": Case(lambda: onn.Flatten(), (2, 2, 3)),
    "FrobeniusLinear": Case(lambda: onn.FrobeniusLinear(4, 3, per_row=True), (2, 4)),
    "FullSort": Case(lambda: onn.FullSort(), (2, 4)),
    "GlobalL2NormPool2d": Case(lambda: onn.GlobalL2NormPool2d(), (2, 3, 3, 3)),
    "GroupSort": Case(lambda: onn.GroupSort(2), (2, 6)),
    "InvertibleDownsample": Case(lambda: onn.InvertibleDownsample(2), (2, 2, 4, 4)),
    "L2NormPool2d": Case(lambda: onn.L2NormPool2d(3, 2), (2, 2, 5, 5)),
    "LayerCentering": Case(lambda: onn.LayerCentering(), (2, 3, 2, 2)),
    "MaxMin": Case(lambda: onn.MaxMin(), (2, 6)),
    "Normalize": Case(lambda: onn.Normalize([0.5, 0.4, 0.3], [0.25, 0.5, 1.0]), (2, 3, 2, 2)),
    "SLLBlock": Case(lambda: onn.SLLBlock(3, 4), (2, 3)),
    "SLLConv2d": Case(lambda: onn.SLLConv2d(2, 3), (2, 2, 5, 5)),
    "ScaledAvgPool2d": Case(lambda: onn.ScaledAvgPool2d(3, 2), (2, 2, 5, 5)),
    "Sequential": Case(lambda: onn.Sequential(onn.OrthoLinear(3, 4), onn.MaxMin()), (2, 3)),
    "ToImage": Case(lambda: onn.ToImage((1, 2, 2)), (2, 4)),
    "ZeroChannelPad": Case(lambda: onn.ZeroChannelPad(4), (2, 2, 2, 2)),
}


def _lag(cls: type) -> float:
    return _POWER_ITERATION_LAG if cls.__name__.startswith("Spectral") else 1e-5


def _family_cases() -> dict[str, Case]:
    out: dict[str, Case] = {}
    for cls in onn.DENSE_LAYERS.values():
        out[cls.__name__] = Case(
            lambda cls=cls: cls.for_shape(_DENSE["in_features"], _DENSE["out_features"]),
            _DENSE["input_shape"], _lag(cls))
    for cls in onn.CONV_LAYERS.values():
        out[cls.__name__] = Case(
            lambda cls=cls: cls.for_shape(_CONV["in_channels"], _CONV["out_channels"], 3,
                                          input_size=_CONV["input_size"]),
            _CONV["input_shape"], _lag(cls))
    return out


CASES: dict[str, Case] = {**_family_cases(), **_OTHERS}


def public_layers() -> dict[str, type]:
    """Every concrete public layer class of :mod:`onelip.nn` (the abstract bases of the layer
    author's contract excluded)."""
    import inspect

    out = {}
    for name in onn.__all__:
        obj = getattr(onn, name)
        if isinstance(obj, type) and issubclass(obj, onn.LipschitzModule) and \
                not inspect.isabstract(obj) and obj not in (onn.LipschitzModule,):
            out[name] = obj
    return out
