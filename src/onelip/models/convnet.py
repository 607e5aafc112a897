# SPDX-License-Identifier: MIT
"""``convnet``: a VGG-like 1-Lipschitz CNN, and its named presets."""

from __future__ import annotations

from dataclasses import dataclass

from onelip import nn as onn
from onelip.models._common import Builder, check_channels, check_common, check_stages

__all__ = ["BETHUNE_VGG", "TUTORIAL_CONVNET", "TUTORIAL_CONVNET_STRIDED", "ConvNetConfig",
           "convnet"]

_DOWNSAMPLE = ("stride", "l2pool")
_STEMS = ("conv", "unshuffle")


@dataclass(frozen=True)
class ConvNetConfig:
    """A VGG-like 1-Lipschitz CNN: stages of 3×3 convolutions (each stage doubles the
    channels; the first of each stage after the first has stride 2, or with
    ``downsample="l2pool"`` every stage ends with a 2×2 L2-norm pooling), then a linear head
    (optionally with hidden orthogonal dense layers).

    deel-torchlip's Fashion-MNIST tutorial network has the shape of
    ``ConvNetConfig(width=16, stages=2, depth=1, downsample="l2pool", hidden=(64,))``:
    conv 16 → pool → conv 32 → pool → dense 64 → dense 10 (``TUTORIAL_CONVNET``).
    """

    input_shape: tuple[int, int, int] = (1, 28, 28)
    """(C, H, W) of one sample; flat inputs are reshaped to it."""
    num_outputs: int = 10
    """K logits, or 1 for a binary classifier sign(f)."""
    width: int = 32
    """Channels of the first stage; stage i has width·2^i (32/64/128 by default)."""
    stages: int = 3
    """Number of stages (each after the first halves H and W). Each halving needs a feature
    map of at least 2×2 (an error names the most stages the input allows), and the last stage
    may have at most :data:`~onelip.models._common.MAX_CHANNELS` (4096) channels."""
    depth: int = 2
    """Convolutions per stage."""
    layer: str = "ortho"
    """A family of :data:`onelip.nn.CONV_LAYERS` that changes shape: 'ortho' (OrthoConv2d),
    'spectral', 'aol', 'cpl', 'soc', 'bro', 'liresnet' or 'shift' (docs/layers.md)."""
    activation: str = "maxmin"
    """'maxmin', 'groupsort', 'fullsort' or 'abs'."""
    group_size: int = 2
    """Group size for 'groupsort'."""
    head: str = "flatten"
    """'flatten' (OrthoLinear on all features) or 'global_l2' (GlobalL2NormPool2d first)."""
    downsample: str = "stride"
    """'stride' (stride-2 first convolution of each stage after the first) or 'l2pool'
    (stride 1 everywhere, L2NormPool2d(2) at the end of every stage)."""
    depths: tuple[int, ...] = ()
    """Convolutions of each stage (one entry per stage), overriding ``depth``; empty: ``depth``
    in every stage."""
    pool_last: bool = True
    """With ``downsample="l2pool"``: also pool after the last stage (``False`` when a global
    pooling head follows, as in the paper's VGG)."""
    hidden: tuple[int, ...] = ()
    """Widths of hidden OrthoLinear + activation layers between the features and the last
    layer."""
    stem: str = "conv"
    """'conv' (the first stage convolves the input at full resolution) or 'unshuffle'
    (``InvertibleDownsample(2)`` first: (C, H, W) → (4C, H/2, W/2), an orthogonal map, which
    takes the place of the first stage's downsampling). The first convolution then expands
    the dimension 4× less: its transpose, which the input gradient goes through, loses less
    norm (the network is closer to gradient-norm preserving)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if self.depths and (len(self.depths) != self.stages or min(self.depths) < 1):
            raise ValueError(f"Expected depths with one positive entry per stage ({self.stages}), "
                             f"but got {self.depths}")
        if self.stem not in _STEMS:
            raise ValueError(f"Unknown stem {self.stem!r}; expected one of {', '.join(_STEMS)}")
        check_common(self)
        if self.stages < 1 or self.depth < 1:
            raise ValueError(
                f"Expected positive stages and depth, but got {self.stages}, {self.depth}"
            )
        if self.downsample not in _DOWNSAMPLE:
            raise ValueError(f"Unknown downsample {self.downsample!r}; expected one of "
                             f"{', '.join(_DOWNSAMPLE)}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"Expected positive hidden widths, but got {self.hidden}")
        if self.activation in ("maxmin", "groupsort") and any(
                h % self.group_size for h in self.hidden):
            raise ValueError(f"Expected hidden widths divisible by the group size "
                             f"{self.group_size}, but got {self.hidden}")
        if self.stem == "unshuffle" and any(s % 2 for s in self.input_shape[1:]):
            raise ValueError(f"stem='unshuffle' needs even H and W, but got {self.input_shape}")
        check_stages(self, self.stages, self._halvings, what=f"stages={self.stages}")
        check_channels(self, self.width << (self.stages - 1),
                       what=f"width·2^(stages-1) = {self.width}·2^{self.stages - 1}")

    def _halvings(self, stages: int):
        """(stage, kind) of each halving of the feature map, as :func:`convnet` builds them."""
        if self.stem == "unshuffle":
            yield 0, "unshuffle"
        for stage in range(stages):
            if self.downsample == "stride" and stage > 0:
                yield stage, "stride"
            elif self.downsample == "l2pool" and not (stage == 0 and self.stem == "unshuffle") \
                    and (self.pool_last or stage < stages - 1):
                yield stage, "pool"


# deel-torchlip's Fashion-MNIST tutorial network, in onelip layers (benchmarks/fashion_mnist.py).
TUTORIAL_CONVNET = {"width": 16, "stages": 2, "depth": 1, "downsample": "l2pool",
                    "hidden": (64,)}
# The same widths and size (conv 16 and 32, 1568 features, dense 64, 10) downsampled by
# orthogonal maps instead of L2 pooling: InvertibleDownsample(2), OrthoConv2d(4→16) at 14×14,
# stride-2 OrthoConv2d(16→32) (a co-isometry: 64 → 32 channels per output pixel). Only the
# first convolution expands the dimension (4×, where the pooled network's expands 16×), so
# the margin's gradient keeps more of its norm (benchmarks/results/fashion_mnist.md: median
# adversarial norm / certified radius 1.27 against 1.65, and the training times).
TUTORIAL_CONVNET_STRIDED = {"width": 16, "stages": 2, "depth": 1, "downsample": "stride",
                            "stem": "unshuffle", "hidden": (64,)}
# The paper's own CIFAR-10 network (Béthune et al. 2022, pareto-front-experiment.py): 3×3
# convolutions (32, 32) / (64, 64, 64) / (128, 128, 128), GroupSort2, L2-norm pooling between
# stages, global L2-norm pooling, dense 128, dense 10. With layer="spectral" (dense kernels
# normalised by a certified bound, the paper's parameterisation) it has the paper's 489,322
# parameters at 32×32×3; with OrthoConv2d (the default) 197,738 (tests/test_pareto.py).
BETHUNE_VGG = {"width": 32, "stages": 3, "depths": (2, 3, 3), "downsample": "l2pool",
               "pool_last": False, "head": "global_l2", "hidden": (128,),
               "activation": "groupsort", "group_size": 2}


def convnet(cfg: ConvNetConfig) -> onn.Sequential:
    b = Builder(cfg)
    strided = cfg.downsample == "stride"
    if cfg.stem == "unshuffle":
        b.layers.append(b.unshuffle())
    for stage in range(cfg.stages):
        width = cfg.width * 2 ** stage
        for i in range(cfg.depths[stage] if cfg.depths else cfg.depth):
            stride = 2 if strided and stage > 0 and i == 0 else 1
            b.layers += [b.conv(width, stride=stride), b.act()]
        last = stage == cfg.stages - 1
        if not strided and not (stage == 0 and cfg.stem == "unshuffle") and \
                (cfg.pool_last or not last):
            b.layers.append(b.pool())
    return onn.Sequential(*b.layers, *b.head(cfg.hidden))
