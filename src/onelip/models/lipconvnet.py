# SPDX-License-Identifier: MIT
r"""``lipconvnet``: the ConvNets XS / S / M / L of Prach, Brau, Buttazzo and Lampert,
*1-Lipschitz Layers Compared: Memory, Speed, and Certifiable Robustness* (CVPR 2024), with
onelip's convolution families (``layer=``, :data:`onelip.nn.CONV_LAYERS`).

The structure (their ``models/simplified_conv_net.py``), for a (C, H, W) input and base width
w:

1. zero-channel concatenation C → w (an isometry), a 1×1 convolution w → w and MaxMin;
2. ``blocks`` blocks; block i (width :math:`w_i = w\,2^i`) is ``depth`` × [k×k convolution
   :math:`w_i \to w_i`, MaxMin], then "first channels" :math:`w_i \to w_i/2` (a projection) and a
   2×2 pixel unshuffle (:math:`w_i/2 \to 2 w_i` channels, H and W halved). The last block uses
   1×1 convolutions (its maps are 2×2);
3. the head: flatten (the maps are 1×1 after five blocks of a 32×32 input) and the first K rows
   of an orthogonal matrix (``OrthoLinear``: their 1×1 convolution followed by first-K channels).

Optionally ``Normalize(mean, std)`` first (then the bound is 1/min σ, certificates stay in pixel
space). Every layer is 1-Lipschitz, so the network is (bound of Normalize)-Lipschitz.

============ ====== ============ ============
preset       width  parameters   (10 classes, 32×32×3, ``layer='ortho'``: latent weights)
============ ====== ============ ============
``xs``       16     see ``onelip inspect``
``s``        32
``m``        64
``l``        128
============ ====== ============ ============
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from onelip import nn as onn
from onelip.models._common import activation
from onelip.nn.channels import FirstChannels, ZeroChannelPad
from onelip.nn.normalize import Normalize

__all__ = ["LIPCONVNET_PRESETS", "LipConvNetConfig", "lipconvnet"]

LIPCONVNET_PRESETS = {"xs": {"width": 16}, "s": {"width": 32}, "m": {"width": 64},
                      "l": {"width": 128}}
"""Prach et al.'s sizes: ConvNet XS / S / M / L (5 blocks of 5 convolutions)."""


@dataclass(frozen=True)
class LipConvNetConfig:
    """A ConvNet of Prach et al. (CVPR 2024) in onelip layers."""

    input_shape: tuple[int, int, int] = (3, 32, 32)
    """(C, H, W) of one sample; flat inputs are reshaped to it."""
    num_outputs: int = 10
    """K logits (≥ 2), or 1 for a binary classifier sign(f)."""
    width: int = 16
    """Base width w (channels of the first block); 16/32/64/128 = XS/S/M/L."""
    blocks: int = 5
    """Downsampling blocks (each halves H and W and doubles the channels)."""
    depth: int = 5
    """Convolutions per block."""
    kernel_size: int = 3
    """Kernel of the convolutions of every block but the last (which uses 1×1)."""
    layer: str = "ortho"
    """A family of :data:`onelip.nn.CONV_LAYERS`: 'ortho' (OrthoConv2d), 'spectral', 'sll',
    'aol', 'cpl', 'soc', 'bro', 'liresnet' or 'shift' (docs/layers.md)."""
    activation: str = "maxmin"
    """'maxmin', 'groupsort', 'fullsort' or 'abs'."""
    group_size: int = 2
    """Group size for 'groupsort'."""
    mean: tuple[float, ...] = ()
    """Per-channel mean of a Normalize first layer (empty: no normalisation)."""
    std: tuple[float, ...] = ()
    """Per-channel std of that layer (its bound is 1/min std)."""

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Expected input_shape (C, H, W), but got {shape}")
        c, h, w = shape
        if self.width < 2 or self.width % 2 or self.width < c:
            raise ValueError(f"Expected an even width >= the {c} input channels, but got "
                             f"width={self.width}")
        if self.blocks < 1 or self.depth < 1 or self.kernel_size < 1 or \
                self.kernel_size % 2 == 0:
            raise ValueError("Expected blocks >= 1, depth >= 1 and an odd kernel_size, but got "
                             f"{self.blocks}, {self.depth}, {self.kernel_size}")
        if h % 2 ** self.blocks or w % 2 ** self.blocks:
            raise ValueError(f"{self.blocks} blocks halve H and W {self.blocks} times: "
                             f"{h}×{w} must be divisible by {2 ** self.blocks}")
        if self.layer not in onn.CONV_LAYERS:
            raise ValueError(f"Unknown layer {self.layer!r}; expected one of "
                             f"{', '.join(onn.CONV_LAYERS)}")
        if self.num_outputs < 1:
            raise ValueError(f"Expected num_outputs >= 1, but got {self.num_outputs}")
        if len(self.mean) != len(self.std) or (self.mean and len(self.mean) != c):
            raise ValueError(f"mean and std need one value per input channel ({c}), but got "
                             f"{len(self.mean)} and {len(self.std)}")
        activation(self.activation, group_size=self.group_size)  # validates the name


def _conv(cfg: LipConvNetConfig, channels: int, kernel: int, size: tuple[int, int]):
    return onn.CONV_LAYERS[cfg.layer].for_shape(channels, channels, kernel, input_size=size)


def lipconvnet(cfg: LipConvNetConfig) -> onn.Sequential:
    c, h, w = cfg.input_shape
    act = lambda: activation(cfg.activation, group_size=cfg.group_size)  # noqa: E731
    layers: list[nn.Module] = [onn.ToImage(cfg.input_shape)]
    if cfg.mean:
        layers.append(Normalize(cfg.mean, cfg.std))
    layers += [ZeroChannelPad(cfg.width), _conv(cfg, cfg.width, 1, (h, w)), act()]
    for i in range(cfg.blocks):
        width = cfg.width * 2 ** i
        kernel = 1 if i == cfg.blocks - 1 else cfg.kernel_size
        for _ in range(cfg.depth):
            layers += [_conv(cfg, width, kernel, (h, w)), act()]
        layers += [FirstChannels(width // 2), onn.InvertibleDownsample(2)]
        h, w = h // 2, w // 2
    features = cfg.width * 2 ** cfg.blocks * h * w
    k = cfg.num_outputs
    last = onn.FrobeniusLinear(features, 1) if k == 1 else onn.OrthoLinear(features, k)
    return onn.Sequential(*layers, onn.Flatten(), last)
