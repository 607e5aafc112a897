# SPDX-License-Identifier: MIT
"""A ``torch.nn.Sequential`` that knows its Lipschitz bound."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from onelip.functional import conv2d_infinite_norm_bound, spectral_norm_exact
from onelip.nn._base import LipschitzModule, check_bound_applies

__all__ = ["Sequential", "conv2d_lipschitz_bound", "module_lipschitz_bound"]


def _alpha_bound(alpha: float) -> float:
    """Lipschitz constant of x ↦ x (x ≥ 0), α·g(x) (x < 0) with |g'| ≤ 1 (LeakyReLU, ELU)."""
    return max(1.0, abs(float(alpha)))


def _softplus_bound(m: nn.Softplus) -> float:
    """1: f' = σ(βx) < 1 — but torch switches to the identity where βx > threshold, a jump
    of log(1 + e^(−threshold))/β there; a jump is no Lipschitz function, so one above float32
    resolution (the default threshold 20 gives 2e-9/β) is refused."""
    jump = math.log1p(math.exp(-float(m.threshold))) / float(m.beta)
    if jump > 1e-7:
        raise TypeError(f"No certified Lipschitz bound for nn.Softplus(beta={m.beta:g}, "
                        f"threshold={m.threshold:g}): torch switches to the identity at "
                        f"x = threshold/beta, a jump of {jump:.3g}; raise threshold (default "
                        "20) so that the jump vanishes")
    return 1.0


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
# The bound of each parameter-free torch module *from its arguments* (the sup of |f'|):
# a constant that ignored them would void the certificate (LeakyReLU(3) is 3-Lipschitz).
_KNOWN_BOUNDS: dict[type, Callable[[nn.Module], float]] = {
    nn.Identity: lambda m: 1.0,
    nn.Flatten: lambda m: 1.0,
    nn.Unflatten: lambda m: 1.0,
    nn.ReLU: lambda m: 1.0,
    nn.ReLU6: lambda m: 1.0,
    nn.Hardtanh: lambda m: 1.0,  # a clamp
    nn.LeakyReLU: lambda m: _alpha_bound(m.negative_slope),
    nn.PReLU: lambda m: max(1.0, float(m.weight.detach().abs().max())),
    nn.ELU: lambda m: _alpha_bound(m.alpha),  # f' = α·eˣ on x < 0: sup |α|
    nn.CELU: lambda m: 1.0,  # f' = e^{x/α} ≤ 1 on x < 0 (α > 0, torch refuses α = 0)
    nn.SELU: lambda m: _SELU_SCALE * _SELU_ALPHA * (1 + 1e-12),  # λα ≈ 1.7581
    nn.Tanh: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25,
    nn.Softplus: lambda m: _softplus_bound(m),
    nn.Dropout: lambda m: 1.0,  # eval: identity (train: ≤ 1/(1-p))
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
    known torch activations and shape modules by the bound their arguments give
    (``nn.LeakyReLU(3)``: 3, ``nn.ELU(alpha=3)``: 3, ``nn.Sigmoid``: 1/4). Anything else
    raises ``TypeError``, since a guess would void the certificate.
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
    bound = _KNOWN_BOUNDS.get(type(module))
    if bound is not None:
        return bound(module)
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
