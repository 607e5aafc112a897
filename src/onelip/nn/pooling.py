# SPDX-License-Identifier: MIT
"""1-Lipschitz pooling and reshaping: :class:`ScaledAvgPool2d`, :class:`L2NormPool2d`,
:class:`GlobalL2NormPool2d`, :class:`InvertibleDownsample`, :class:`Flatten`,
:class:`ToImage`."""

from __future__ import annotations

import math

from torch import Tensor, nn

from onelip import functional as F
from onelip.nn._base import LipschitzModule

__all__ = [
    "Flatten",
    "GlobalL2NormPool2d",
    "InvertibleDownsample",
    "L2NormPool2d",
    "ScaledAvgPool2d",
    "ToImage",
]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class ScaledAvgPool2d(LipschitzModule):
    r"""Average pooling rescaled to operator norm 1.

    .. math::
        y = \frac{k_h k_w}{\|S\|}\,\operatorname{avgpool}_{k, s, p}(x),

    :math:`S` the linear map of window *sums* (zero padding counted,
    ``count_include_pad=True``). For non-overlapping windows (s = k, the default)
    :math:`\|S\| = \sqrt{k_h k_w}`: y is the average times :math:`\sqrt{k_h k_w}` (×k for
    k×k windows), exactly norm 1. For overlapping windows :math:`\|S\|` is larger: it is
    computed exactly (:func:`onelip.functional.avg_pool_norm`) — for all input sizes at once
    (the infinite-signal norm, :math:`\prod_{axes} \sqrt{\sum_r n_r^2}`, reached as the input
    grows) or, with ``input_size``, for that size only (then other sizes are refused).

    Args:
        kernel_size: k or (k_h, k_w).
        stride: Default: ``kernel_size``.
        padding: zero padding. Default: 0.
        input_size: (H, W) for the exact factor of that size; ``None`` (default): the factor
            valid for every size.

    Shape:
        :math:`(N, C, H, W) \to (N, C, H', W')` as ``nn.AvgPool2d``.

    Example:
        >>> pool = ScaledAvgPool2d(2)  # avg × 2 = window sums / 2: operator norm 1
        >>> x = torch.randn(1, 1, 4, 4)
        >>> sums = x.reshape(1, 1, 2, 2, 2, 2).sum((3, 5))
        >>> bool(torch.allclose(pool(x), sums / 2))
        True
    """

    def __init__(self, kernel_size, stride=None, padding=0, *,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"Expected positive kernel_size and stride and padding >= 0, but got "
                f"{self.kernel_size}, {self.stride}, {self.padding}"
            )
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"Expected padding <= kernel_size / 2, but got padding={self.padding}"
            )
        self.input_size = None if input_size is None else _pair(input_size)
        norm = F.avg_pool_norm(self.kernel_size, self.stride, self.padding, self.input_size)
        self.scale = self.kernel_size[0] * self.kernel_size[1] / norm

    def forward(self, x: Tensor) -> Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"ScaledAvgPool2d's factor is exact for inputs of size {self.input_size}, "
                f"but got {tuple(x.shape[-2:])}"
            )
        return F.scaled_avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                                   scale=self.scale)

    def lipschitz_bound(self) -> float:
        return 1.0  # scale = 1 / the exact norm of the window sum (functional.avg_pool_norm)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, scale={self.scale:.6g}")


class L2NormPool2d(LipschitzModule):
    r"""L2-norm pooling: the Euclidean norm of each window, divided by :math:`\sqrt c`.

    .. math::
        y_w = \frac{1}{\sqrt c}\Big(\sqrt{\|x_w\|^2 + \epsilon} - \sqrt\epsilon\Big),

    c the largest number of windows that cover one pixel (1 for non-overlapping windows).
    1-Lipschitz (the factor is exact: an impulse at a pixel covered c times reaches it), and
    gradient-norm preserving for non-overlapping windows. ε = 1e-12 keeps the gradient finite
    at 0.

    Args:
        kernel_size: k or (k_h, k_w).
        stride: Default: ``kernel_size``.

    Shape:
        :math:`(N, C, H, W) \to (N, C, \lfloor (H-k)/s \rfloor + 1, \dots)`.
    """

    def __init__(self, kernel_size, stride=None, *, eps: float = 1e-12) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(
                f"Expected positive kernel_size and stride, but got {self.kernel_size}, "
                f"{self.stride}"
            )
        self.eps = eps

    def lipschitz_bound(self) -> float:
        return 1.0  # see the class: ‖·‖₂ of each window, windows scaled to norm ≤ 1

    def forward(self, x: Tensor) -> Tensor:
        return F.l2_norm_pool2d(x, self.kernel_size, self.stride, eps=self.eps)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class GlobalL2NormPool2d(LipschitzModule):
    r"""Per-channel L2 norm over the spatial axes: :math:`y_c = \|x_c\|_2`
    (:math:`\sqrt{\|x_c\|^2+\epsilon}-\sqrt\epsilon`). 1-Lipschitz, gradient-norm preserving.

    Shape:
        :math:`(N, C, H, W) \to (N, C)`.
    """

    def __init__(self, *, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def lipschitz_bound(self) -> float:
        return 1.0  # the L2 norm of each channel is 1-Lipschitz

    def forward(self, x: Tensor) -> Tensor:
        return F.global_l2_norm_pool2d(x, eps=self.eps)


class InvertibleDownsample(LipschitzModule):
    r"""Pixel unshuffle: each f×f block of pixels becomes :math:`f^2` channels.

    A permutation of the coordinates, hence orthogonal (norm preserving, invertible by
    ``nn.PixelShuffle``).

    Shape:
        :math:`(N, C, H, W) \to (N, C f^2, H/f, W/f)`; H and W must be multiples of f.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"Expected factor >= 1, but got factor={factor}")
        self.factor = int(factor)

    def lipschitz_bound(self) -> float:
        return 1.0  # a permutation of the pixels: orthogonal

    def forward(self, x: Tensor) -> Tensor:
        return F.invertible_downsample(x, factor=self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Flatten(LipschitzModule, nn.Flatten):
    """``nn.Flatten`` with :meth:`lipschitz_bound` (a reshape: orthogonal)."""

    def lipschitz_bound(self) -> float:
        return 1.0  # a reshape: orthogonal


class ToImage(LipschitzModule):
    r"""Reshape flat inputs :math:`(N, C H W)` to images :math:`(N, C, H, W)`; images pass
    through unchanged (after a shape check). A reshape: orthogonal.

    Lets one model take the flat tensors of :mod:`onelip.data` and image batches alike.

    Args:
        input_shape: (C, H, W).
    """

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"Expected input_shape (C, H, W), but got {input_shape}")
        self.input_shape = tuple(int(s) for s in input_shape)

    def lipschitz_bound(self) -> float:
        return 1.0  # a reshape: orthogonal

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2 and x.shape[1] == math.prod(self.input_shape):
            return x.reshape(x.shape[0], *self.input_shape)
        if x.dim() == 4 and tuple(x.shape[1:]) == self.input_shape:
            return x
        raise ValueError(
            f"Expected input of shape (N, {math.prod(self.input_shape)}) or "
            f"(N, {', '.join(map(str, self.input_shape))}), but got {tuple(x.shape)}"
        )

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}"
