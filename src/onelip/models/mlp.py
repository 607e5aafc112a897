# SPDX-License-Identifier: MIT
"""``mlp``: a dense 1-Lipschitz MLP."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from onelip import nn as onn
from onelip.models._common import activation

__all__ = ["MLPConfig", "mlp"]

_LINEAR = onn.DENSE_LAYERS


@dataclass(frozen=True)
class MLPConfig:
    """A dense 1-Lipschitz MLP: Flatten → [Linear → activation] × len(hidden) → head."""

    in_features: int = 784
    """Input size D (inputs of any shape are flattened)."""
    num_outputs: int = 10
    """K logits, or 1 for a binary classifier sign(f)."""
    hidden: tuple[int, ...] = (512, 512, 512)
    """Widths of the hidden layers."""
    layer: str = "ortho"
    """A family of :data:`onelip.nn.DENSE_LAYERS`: 'ortho' (OrthoLinear), 'spectral'
    (SpectralLinear), 'aol' (AOLLinear), 'cpl' (CPLLinear) or 'bro' (BROLinear)."""
    activation: str = "maxmin"
    """'maxmin', 'groupsort', 'fullsort' or 'abs'."""
    group_size: int = 2
    """Group size for 'groupsort'."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.layer not in _LINEAR:
            raise ValueError(f"Unknown layer {self.layer!r}; expected one of {', '.join(_LINEAR)}")
        if self.in_features < 1 or self.num_outputs < 1 or any(h < 1 for h in self.hidden):
            raise ValueError("Expected positive in_features, num_outputs and hidden widths")


def mlp(cfg: MLPConfig) -> onn.Sequential:
    lin = _LINEAR[cfg.layer].for_shape
    layers: list[nn.Module] = [nn.Flatten()]
    width = cfg.in_features
    for h in cfg.hidden:
        layers += [lin(width, h), activation(cfg.activation, group_size=cfg.group_size)]
        width = h
    if cfg.num_outputs == 1:
        layers.append(onn.FrobeniusLinear(width, 1))
    else:
        layers.append(lin(width, cfg.num_outputs))
    return onn.Sequential(*layers)
