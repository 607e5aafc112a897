# SPDX-License-Identifier: MIT
"""Full precision for the constraint math under an ambient autocast (a private leaf of
:mod:`onelip.nn`; the public names live in :mod:`onelip.nn.utils`)."""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["float32_call", "float32_forward", "full_precision", "param_dtype"]


def full_precision(device: torch.device):
    """A context with any ambient ``torch.autocast`` of ``device``'s type switched off: the
    constraint math (orthonormalisation, normalisation by a norm, its float32 cast margin)
    runs in the weights' own dtype, float32 or float64, never in bf16/fp16, so the weight a
    layer applies is the one its bound was proved for. Without autocast: a no-op.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), full_precision(torch.device("cpu")):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def float32_forward(forward: Callable) -> Callable:
    """Decorate a layer's ``forward(self, x)`` to run in full precision under autocast: x is
    upcast to the layer's dtype and the whole forward, constraint math included, runs with
    autocast off (for the dense and residual layers, whose cost is small beside the
    convolutions'; :class:`~onelip.nn.OrthoConv2d` instead builds only its kernel in full
    precision and convolves under the ambient autocast). Without autocast: ``forward`` as it
    is. (:class:`~onelip.nn.ConstrainedLayer` does this itself for the layers that set
    ``full_precision_forward = True``.)"""

    @functools.wraps(forward)
    def wrapped(self, x: Tensor) -> Tensor:
        return float32_call(self, functools.partial(forward, self), x)

    return wrapped


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first parameter (float32 without parameters)."""
    return next((p.dtype for p in module.parameters()), torch.float32)


def float32_call(module: nn.Module, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn(x)``; under an ambient autocast of ``x``'s device, with autocast off and ``x``
    upcast to ``module``'s parameter dtype (the full-precision forward of
    :func:`float32_forward` and of :class:`~onelip.nn.ConstrainedLayer`)."""
    dt = x.device.type
    if not torch.is_autocast_enabled(dt):
        return fn(x)
    with torch.autocast(dt, enabled=False):
        return fn(x.to(param_dtype(module)) if x.is_floating_point() else x)
