# SPDX-License-Identifier: MIT
"""``mlp``: a dense 1-Lipschitz MLP."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from onelip import nn as onn
from onelip._errors import Argument, ArgumentError
from onelip._memory import available_bytes, size_text
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


def _check_fits(cfg: MLPConfig) -> None:
    """Refuse, before allocating, widths whose float32 weights alone exceed the memory
    available (:func:`onelip._memory.available_bytes`), with the size they need."""
    widths = [cfg.in_features, *cfg.hidden, cfg.num_outputs]
    params = sum(a * b for a, b in zip(widths, widths[1:]))
    need, free = 4 * params, available_bytes()
    if free is not None and need > free:
        hidden = (f"{len(cfg.hidden)} × {cfg.hidden[0]}" if len(set(cfg.hidden)) == 1
                  else ", ".join(map(str, cfg.hidden)))
        raise ArgumentError(f"mlp: hidden widths ({hidden}) on {cfg.in_features} inputs need "
                            f"{params:,} weights, {size_text(need)} as float32 before any "
                            f"training state, more than the {size_text(free)} of memory "
                            "available; pass smaller ", Argument("hidden", "hidden widths"))


def mlp(cfg: MLPConfig) -> onn.Sequential:
    _check_fits(cfg)
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
