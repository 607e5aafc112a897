# SPDX-License-Identifier: MIT
"""What the architectures share: activations by name and a shape-tracking layer builder."""

from __future__ import annotations

from typing import Callable

from torch import nn

from onelip import nn as onn

def activation(name: str, *, group_size: int = 2) -> nn.Module:
    acts: dict[str, Callable[[], nn.Module]] = {
        "groupsort": lambda: onn.GroupSort(group_size),
        "maxmin": lambda: onn.MaxMin(),
        "fullsort": lambda: onn.FullSort(),
        "abs": lambda: onn.Abs(),
    }
    if name not in acts:
        raise ValueError(f"Unknown activation {name!r}; expected one of {', '.join(acts)}")
    return acts[name]()


_LAYERS = ("ortho", "spectral")
_HEADS = ("flatten", "global_l2")


def check_common(cfg) -> None:
    shape = tuple(int(s) for s in cfg.input_shape)
    object.__setattr__(cfg, "input_shape", shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"Expected input_shape (C, H, W) for a convolutional model, but got {shape}"
        )
    if cfg.num_outputs < 1 or cfg.width < 1:
        raise ValueError(
            f"Expected positive num_outputs and width, but got {cfg.num_outputs}, {cfg.width}"
        )
    if cfg.activation in ("maxmin", "groupsort") and cfg.width % cfg.group_size:
        raise ValueError(
            f"Expected width divisible by the group size {cfg.group_size}, but got {cfg.width}"
        )
    if cfg.layer not in _LAYERS:
        raise ValueError(f"Unknown layer {cfg.layer!r}; expected one of {', '.join(_LAYERS)}")
    if cfg.head not in _HEADS:
        raise ValueError(f"Unknown head {cfg.head!r}; expected one of {', '.join(_HEADS)}")


class Builder:
    """Appends layers while tracking the shape (C, H, W) of the activations."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.shape = cfg.input_shape
        self.layers: list[nn.Module] = [onn.ToImage(cfg.input_shape)]

    def conv(self, out_channels: int, *, stride: int = 1) -> nn.Module:
        c, h, w = self.shape
        if self.cfg.layer == "ortho":
            layer = onn.OrthoConv2d(c, out_channels, 3, stride=stride)
        else:
            layer = onn.SpectralConv2d(c, out_channels, 3, input_size=(h, w), stride=stride)
        self.shape = (out_channels, (h - 1) // stride + 1, (w - 1) // stride + 1)
        return layer

    def act(self) -> nn.Module:
        return activation(self.cfg.activation, group_size=self.cfg.group_size)

    def unshuffle(self) -> nn.Module:
        c, h, w = self.shape
        self.shape = (4 * c, h // 2, w // 2)
        return onn.InvertibleDownsample(2)

    def pool(self) -> nn.Module:
        c, h, w = self.shape
        self.shape = (c, h // 2, w // 2)
        return onn.L2NormPool2d(2)

    def head(self, hidden: tuple[int, ...] = ()) -> list[nn.Module]:
        c, h, w = self.shape
        k = self.cfg.num_outputs
        if self.cfg.head == "global_l2":
            layers: list[nn.Module] = [onn.GlobalL2NormPool2d()]
            features = c
        else:
            layers = [onn.Flatten()]
            features = c * h * w
        for width in hidden:
            layers += [onn.OrthoLinear(features, width), self.act()]
            features = width
        last = onn.FrobeniusLinear(features, 1) if k == 1 else onn.OrthoLinear(features, k)
        return layers + [last]
