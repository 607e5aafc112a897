# SPDX-License-Identifier: MIT
"""1-Lipschitz layers (``torch.nn.Module`` subclasses)."""

from __future__ import annotations

from torch import nn

from onelip.nn._base import LipschitzModule
from onelip.nn.activations import Abs, FullSort, GroupSort, MaxMin
from onelip.nn.linear import FrobeniusLinear, OrthoLinear, SpectralLinear
from onelip.nn.sequential import Sequential, module_lipschitz_bound

__all__ = [
    "Abs",
    "FrobeniusLinear",
    "FullSort",
    "GroupSort",
    "LipschitzModule",
    "MaxMin",
    "OrthoLinear",
    "Sequential",
    "SpectralLinear",
    "module_lipschitz_bound",
    "retract_",
]


def retract_(model: nn.Module) -> None:
    """Call ``retract_()`` on every submodule that has one (after an optimiser step).

    Retraction moves latent weights towards their constrained values without changing the
    function computed in eval mode; it keeps the fast training forward close to exact.
    """
    for m in model.modules():
        fn = getattr(m, "retract_", None)
        if isinstance(m, LipschitzModule) and callable(fn):
            fn()
