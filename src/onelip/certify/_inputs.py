# SPDX-License-Identifier: MIT
"""Private checks of what the certificates are given (points, labels, radii) and of the
precision they are computed in (float32 or better, autocast off: see :mod:`onelip.certify`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor

from onelip._validation import (
    binary_scores_and_signs,
    check_finite,
    class_indices,
    is_binary_output,
)

# Floating dtypes too coarse for a certificate: (b)float16 and the float8 types.
_MIN_BITS = 32


def low_precision(dtype: torch.dtype) -> bool:
    """True for floating dtypes of fewer than 32 bits (float16, bfloat16, float8)."""
    return dtype.is_floating_point and torch.finfo(dtype).bits < _MIN_BITS


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` as float32 if it is an integer, bool or lower-precision float (exact), else ``t``."""
    if not t.is_floating_point() or low_precision(t.dtype):
        return t.to(torch.float32)
    return t


@contextmanager
def no_autocast_for(*tensors: Tensor) -> Iterator[None]:
    """Switch off any ambient ``torch.autocast`` for the CPU and for the devices of
    ``tensors`` (the ones the computation runs on), restored on exit."""
    types = {"cpu"} | {t.device.type for t in tensors if isinstance(t, Tensor)}
    with ExitStack() as stack:
        for device_type in sorted(types):
            if torch.amp.is_autocast_available(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def check_model_precision(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the model's floating parameters and buffers (the first one's; None if it
    has none); a ValueError if any of them is of low precision (bf16, fp16, float8)."""
    dtype = None
    for t in (*model.parameters(), *model.buffers()):
        if not t.is_floating_point():
            continue
        if low_precision(t.dtype):
            raise ValueError(
                f"The model's weights are {str(t.dtype).removeprefix('torch.')}: certificates "
                "are computed in float32 or better (a low-precision forward has no certified "
                "bound); certify model.float() instead"
            )
        dtype = dtype or t.dtype
    return dtype


def check_eps(eps: object) -> list[float]:
    """ε as a list of non-negative finite floats: one number (a list of one) or an iterable of
    numbers (a 0-d or 1-d tensor too)."""
    if getattr(eps, "ndim", None) == 0 and hasattr(eps, "item"):  # 0-d tensor or array
        eps = eps.item()
    if isinstance(eps, Tensor):
        eps = eps.reshape(-1).tolist()
    elif isinstance(eps, (str, bytes)) or not isinstance(eps, (numbers.Real, Iterable)):
        raise TypeError(f"Expected eps to be a number or a sequence of numbers, but got "
                        f"{type(eps).__name__} {eps!r}")
    values = [eps] if isinstance(eps, numbers.Real) else list(eps)
    out = []
    for e in values:
        if isinstance(e, Tensor) and e.numel() == 1:
            e = e.item()
        if isinstance(e, bool) or not isinstance(e, numbers.Real):
            raise TypeError(f"Expected eps to be numbers, but got {type(e).__name__} {e!r}")
        out.append(float(e))
    if any(e < 0 or not math.isfinite(e) for e in out):
        raise ValueError(f"Expected non-negative finite eps, but got {out}")
    return out


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected {name} to be an integer >= {minimum}, but got "
                         f"{name}={value!r}")
    return int(value)


def check_points(x: object) -> Tensor:
    """``x``: a floating tensor (N, *input_shape) of finite values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected x to be a torch.Tensor, but got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError("Expected x of shape (N, *input_shape), but got a 0-d tensor")
    if x.dtype == torch.uint8:  # read as 0..255, a model trained on [0, 1] would be off 255×
        raise ValueError("x holds uint8 pixels (0..255), but a model takes images in [0, 1]: "
                         "pass onelip.data.as_float(x) (float32, x / 255)")
    check_finite("x", x)
    return x


def check_label_shape(y: object, n: int) -> Tensor:
    """``y``: a tensor of N labels, shape (N,) or (N, 1). Values are checked against the
    outputs by :func:`checked_labels`."""
    if not isinstance(y, Tensor):
        raise TypeError(f"Expected labels y to be a torch.Tensor, but got {type(y).__name__}")
    if y.dim() > 2 or (y.dim() == 2 and y.shape[1] != 1):
        hint = ("; one-hot or probability labels? pass class indices, y.argmax(1)"
                if y.dim() == 2 and y.shape[0] == n else "")
        raise ValueError(f"Expected labels of shape (N,) or (N, 1), but got shape "
                         f"{tuple(y.shape)}{hint}")
    if y.numel() != n:
        raise ValueError(f"Expected {n} labels for {n} points, but got {y.numel()} "
                         f"(labels of shape {tuple(y.shape)})")
    return y


def checked_labels(out: Tensor, y: Tensor) -> Tensor:
    """``y`` against the model's outputs ``out``: signs ±1 (N,) for one output (labels in
    {0, 1} or {−1, +1}), else class indices in [0, K) as int64 (N,); on ``out``'s device."""
    if not isinstance(y, Tensor):
        raise TypeError(f"Expected labels to be a torch.Tensor, but got {type(y).__name__}")
    n = out.shape[0] if out.dim() else 1
    check_label_shape(y, n)
    y = y.to(out.device)
    if is_binary_output(out):
        return binary_scores_and_signs(out, y)[1]
    return class_indices(out, y)
