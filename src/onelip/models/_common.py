# SPDX-License-Identifier: MIT
"""What the architectures share: activations by name and a shape-tracking layer builder."""

from __future__ import annotations

from typing import Callable, Iterator

from torch import nn

from onelip import nn as onn

MAX_CHANNELS = 4096
"""The most channels a convolutional model may have in any layer (its last stage's
width·2^(stages-1), times ``inner_factor`` for SLL blocks). A 4096-channel 3×3 orthogonal
convolution alone has 151 M parameters; wider is a typo (e.g. ``stages=10``), not a model."""


def activation(name: str, *, group_size: int = 2) -> nn.Module:
    acts: dict[str, Callable[[], nn.Module]] = {
        "groupsort": lambda: onn.GroupSort(group_size),
        "maxmin": lambda: onn.MaxMin(),
        "fullsort": lambda: onn.FullSort(),
        "abs": lambda: onn.Abs(),
        "betaabs": lambda: onn.BetaAbs(0.5),
    }
    if name not in acts:
        raise ValueError(f"Unknown activation {name!r}; expected one of {', '.join(acts)}")
    return acts[name]()


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
    if cfg.layer not in onn.CONV_LAYERS:
        raise ValueError(f"Unknown layer {cfg.layer!r}; expected one of "
                         f"{', '.join(onn.CONV_LAYERS)}")
    if cfg.head not in _HEADS:
        raise ValueError(f"Unknown head {cfg.head!r}; expected one of {', '.join(_HEADS)}")


def check_stages(cfg, stages: int, plan: Callable[[int], Iterator[tuple[int, str]]], *,
                 what: str) -> None:
    """Refuse more stages than the input size allows.

    ``plan(n)`` yields, for a model of ``n`` stages, ``(stage, kind)`` for each halving of the
    feature map in order: ``"stride"`` (a stride-2 convolution, H → ceil(H/2)), ``"pool"``
    (2×2 pooling, H → floor(H/2)) or ``"unshuffle"`` (H → H/2). Each halving needs a map of at
    least 2×2: halving a 1×1 map repeats one pixel (stride) or leaves nothing (pooling). The
    error names the largest number of stages these inputs allow. ``what`` describes the field
    (e.g. ``"stages=10"``).
    """
    h, w = cfg.input_shape[1:]

    def first_bad(n: int) -> tuple[int, int, int] | None:
        hh, ww = h, w
        for stage, kind in plan(n):
            if min(hh, ww) < 2:
                return stage, hh, ww
            if kind == "pool":
                hh, ww = hh // 2, ww // 2
            else:
                hh, ww = (hh + 1) // 2, (ww + 1) // 2
        return None

    bad = first_bad(stages)
    if bad is None:
        return
    most = 0
    while most + 1 < stages and first_bad(most + 1) is None:
        most += 1
    stage, hh, ww = bad
    allow = (f"these inputs allow at most {most} stage{'s' if most != 1 else ''}" if most else
             "these inputs are too small for any stage of this downsampling")
    raise ValueError(f"{what} is too many for {h}×{w} inputs: stage {stage + 1} would halve a "
                     f"{hh}×{ww} feature map (halving needs at least 2×2); {allow}")


def check_channels(cfg, channels: int, *, what: str) -> None:
    """Refuse a layer of more than :data:`MAX_CHANNELS` channels; ``what`` says how
    ``channels`` came about (e.g. ``"width·2^(stages-1) = 32·2^9"``)."""
    if channels > MAX_CHANNELS:
        raise ValueError(f"{what} = {channels} channels is more than onelip builds "
                         f"({MAX_CHANNELS}, the limit of any layer); lower width or the number "
                         "of stages")


class Builder:
    """Appends layers while tracking the shape (C, H, W) of the activations."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.shape = cfg.input_shape
        self.layers: list[nn.Module] = [onn.ToImage(cfg.input_shape)]

    def conv(self, out_channels: int, *, stride: int = 1) -> nn.Module:
        c, h, w = self.shape
        layer = onn.CONV_LAYERS[self.cfg.layer].for_shape(c, out_channels, 3, stride=stride,
                                                          input_size=(h, w))
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
