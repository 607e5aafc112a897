# SPDX-License-Identifier: MIT
"""A ``torch.nn.Sequential`` that knows its Lipschitz bound."""

from __future__ import annotations

import math

import torch
from torch import nn

from onelip.functional import conv2d_infinite_norm_bound, spectral_norm_exact
from onelip.nn._base import LipschitzModule, check_bound_applies

__all__ = ["Sequential", "conv2d_lipschitz_bound", "module_lipschitz_bound"]

# Parameter-free torch modules and their L2 Lipschitz constants.
_KNOWN_CONSTANTS: dict[type, float] = {
    nn.Identity: 1.0,
    nn.Flatten: 1.0,
    nn.Unflatten: 1.0,
    nn.ReLU: 1.0,
    nn.LeakyReLU: 1.0,
    nn.Tanh: 1.0,
    nn.Sigmoid: 0.25,
    nn.Softplus: 1.0,
    nn.ELU: 1.0,
    nn.Dropout: 1.0,  # eval: identity; train: ≤ 1/(1-p), see below
}


def conv2d_lipschitz_bound(conv: nn.Conv2d) -> float:
    """A certified bound of a plain ``nn.Conv2d``'s operator norm, valid for every input size:
    :func:`onelip.functional.conv2d_infinite_norm_bound` of its stored kernel (stride,
    dilation and groups included; any zero padding). With ``padding_mode="circular"`` the
    convolution is (a row selection of) a circular convolution, bounded by the same supremum
    at stride 1, provided the padding does not exceed the dilated kernel minus one (more would
    repeat output rows). Reflect and replicate padding repeat input pixels: refused.

    Raises:
        TypeError: a padding this bound does not cover.
    """
    mode = conv.padding_mode
    if mode == "zeros":
        return conv2d_infinite_norm_bound(conv.weight, stride=conv.stride,
                                          dilation=conv.dilation, groups=conv.groups)
    if mode == "circular":
        span = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]  # (h, w)
        if isinstance(conv.padding, str):  # "same": d(k-1) in all, "valid": none
            total = span if conv.padding == "same" else [0, 0]
        else:
            total = [2 * int(p) for p in conv.padding]
        if total[0] <= span[0] and total[1] <= span[1]:
            return conv2d_infinite_norm_bound(conv.weight, stride=1, dilation=conv.dilation,
                                              groups=conv.groups)
        raise TypeError(
            f"No certified Lipschitz bound is known for Conv2d with circular padding "
            f"{conv.padding} larger than its kernel span {tuple(span)} (rows repeat)"
        )
    raise TypeError(
        f"No certified Lipschitz bound is known for Conv2d with padding_mode={mode!r} "
        "(it repeats input pixels); use zero or circular padding"
    )


def module_lipschitz_bound(module: nn.Module) -> float:
    """A certified upper bound of ``module``'s L2 Lipschitz constant (eval mode).

    onelip layers (``isinstance(module, LipschitzModule)``, the one rule) report their own,
    unless they override ``forward`` without restating the bound
    (:func:`~onelip.nn._base.check_bound_applies`); ``nn.Linear`` is bounded by the spectral
    norm of its stored weight (SVD in float64, rounded up); ``nn.Conv2d`` by a certified bound
    of its operator norm that holds for every input size (:func:`conv2d_lipschitz_bound`);
    known parameter-free torch modules by their constant. Anything else raises ``TypeError``,
    since a guess would void the certificate.
    """
    if isinstance(module, LipschitzModule):
        check_bound_applies(module)
        return float(module.lipschitz_bound())
    if type(module) is nn.Linear:
        return float(spectral_norm_exact(module.weight.double())) * (1 + 1e-9)
    if type(module) is nn.Conv2d:
        return conv2d_lipschitz_bound(module)
    if type(module) is nn.Sequential:
        return math.prod(module_lipschitz_bound(m) for m in module)
    for cls, const in _KNOWN_CONSTANTS.items():
        if type(module) is cls:
            return const
    raise TypeError(
        f"No certified Lipschitz bound is known for {type(module).__name__}; "
        "use onelip layers or give the module a lipschitz_bound() method"
    )


class Sequential(LipschitzModule, nn.Sequential):
    """``nn.Sequential`` with :meth:`lipschitz_bound`: the product of its modules' bounds.

    Example:
        >>> from onelip.nn import OrthoLinear, GroupSort
        >>> net = Sequential(OrthoLinear(4, 8), GroupSort(2), OrthoLinear(8, 2))
        >>> net.lipschitz_bound()
        1.0
    """

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        check_bound_applies(self)
        return math.prod(module_lipschitz_bound(m) for m in self)
