# SPDX-License-Identifier: MIT
"""``lipresnet``: a 1-Lipschitz residual network (SLL, convex or LiResNet residual blocks),
and its preset ``liresnet``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onelip import nn as onn
from onelip.models._common import Builder, check_channels, check_common, check_stages

__all__ = ["LIRESNET", "LipResNetConfig", "lipresnet"]

_BLOCKS = ("sll", "convex", "liresnet")

# LiResNet (Hu et al., NeurIPS 2023) in onelip layers: stages of linear residual convolutions
# (LiResConv2d, γ = 1/√blocks, each followed by the activation), certified instead of
# power-iterated. The reference keeps one width after a stride-2 stem (its model.py default:
# 12 blocks of 128 channels); this small CPU-sized preset keeps lipresnet's stages.
LIRESNET = {"block": "liresnet", "width": 32, "blocks": (2, 4, 4)}


@dataclass(frozen=True)
class LipResNetConfig:
    """A 1-Lipschitz residual network: a stem convolution, stages of residual blocks separated
    by stride-2 orthogonal convolutions that double the channels, then a linear head."""

    input_shape: tuple[int, int, int] = (1, 28, 28)
    """(C, H, W) of one sample; flat inputs are reshaped to it."""
    num_outputs: int = 10
    """K logits, or 1 for a binary classifier sign(f)."""
    width: int = 32
    """Channels of the first stage; stage i has width·2^i."""
    blocks: tuple[int, ...] = (2, 2, 2)
    """Residual blocks per stage (its length is the number of stages; each stage after the
    first halves H and W, which needs a feature map of at least 2×2, and the last stage may
    have at most :data:`~onelip.models._common.MAX_CHANNELS` (4096) channels)."""
    block: str = "sll"
    """'sll' (SLLConv2d), 'convex' (ConvexResidual around conv-activation-conv) or 'liresnet'
    (LiResConv2d with γ = 1/√(blocks of the stage), then the activation: LiResNet)."""
    inner_factor: int = 1
    """Inner channels of an SLL block, as a multiple of its channels."""
    layer: str = "ortho"
    """Stem, downsampling and 'convex'-block convolutions: a family of
    :data:`onelip.nn.CONV_LAYERS` that changes shape ('ortho', 'spectral', 'aol', 'cpl', 'soc',
    'bro', 'liresnet', 'shift'; 'sll' is residual only)."""
    activation: str = "maxmin"
    """Activation after the stem and inside 'convex' blocks."""
    group_size: int = 2
    """Group size for 'groupsort'."""
    head: str = "flatten"
    """'flatten' (OrthoLinear on all features) or 'global_l2' (GlobalL2NormPool2d first)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        check_common(self)
        if not self.blocks or any(b < 0 for b in self.blocks):
            raise ValueError(f"Expected non-negative blocks per stage, but got {self.blocks}")
        if self.block not in _BLOCKS:
            raise ValueError(f"Unknown block {self.block!r}; expected one of {', '.join(_BLOCKS)}")
        if self.inner_factor < 1:
            raise ValueError(f"Expected inner_factor >= 1, but got {self.inner_factor}")
        n = len(self.blocks)
        check_stages(self, n, lambda stages: ((s, "stride") for s in range(1, stages)),
                     what=f"blocks={list(self.blocks)} ({n} stages)")
        check_channels(self, self.width << (n - 1),
                       what=f"width·2^(stages-1) = {self.width}·2^{n - 1}")
        if self.block == "sll":
            inner = max(self.width << s for s, b in enumerate(self.blocks) if b) \
                if any(self.blocks) else 0
            check_channels(self, inner * self.inner_factor,
                           what=f"inner_factor·(stage channels) = {self.inner_factor}·{inner}")


def lipresnet(cfg: LipResNetConfig) -> onn.Sequential:
    b = Builder(cfg)
    b.layers += [b.conv(cfg.width), b.act()]
    for stage, n_blocks in enumerate(cfg.blocks):
        if stage > 0:
            b.layers.append(b.conv(cfg.width * 2 ** stage, stride=2))
        c = b.shape[0]
        for _ in range(n_blocks):
            if cfg.block == "sll":
                b.layers.append(onn.SLLConv2d(c, c * cfg.inner_factor))
            elif cfg.block == "liresnet":
                b.layers += [onn.LiResConv2d(c, c, 3, input_size=b.shape[1:],
                                             gamma=1 / math.sqrt(n_blocks)), b.act()]
            else:
                body = onn.Sequential(b.conv(c), b.act(), b.conv(c))
                b.layers.append(onn.ConvexResidual(body, 0.5, learnable=True))
    return onn.Sequential(*b.layers, *b.head())
