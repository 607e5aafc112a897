# SPDX-License-Identifier: MIT
r"""Certified radii from logits: :math:`|f|/L` (binary), :math:`M/(\sqrt2 L)` (multiclass
margin), and the exact last-layer radius :math:`\min_{j\ne y}(f_y - f_j)/(L\|w_y - w_j\|)`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onelip._validation import is_binary_output
from onelip.certify._inputs import at_least_float32, checked_labels, no_autocast_for

__all__ = ["certified_radius", "last_layer_radius"]


def _check_lipschitz(lipschitz: float) -> None:
    if not (lipschitz > 0 and math.isfinite(lipschitz)):
        raise ValueError(f"Expected a positive finite lipschitz, but got lipschitz={lipschitz}")


def certified_radius(logits: Tensor, labels: Tensor | None = None, *,
                     lipschitz: float = 1.0) -> Tensor:
    r"""Certified L2 radius of each prediction of an L-Lipschitz network.

    * binary (logits (N,) or (N, 1)): :math:`|f|/L`, or with labels :math:`y f / L`
      (≤ 0 when misclassified), labels in {0, 1} or {−1, +1} as for the losses
      (``onelip._validation.binary_signs``; anything else is a ValueError);
    * multiclass (logits (N, K)): :math:`(f_{(1)} - f_{(2)})/(\sqrt2 L)` (top-1 minus top-2),
      or with labels in [0, K) :math:`(f_y - \max_{j\ne y} f_j)/(\sqrt2 L)` (≤ 0 when
      misclassified).

    Labels: shape (N,) or (N, 1), N the number of logits (a length-1 ``labels`` is not
    broadcast; one-hot labels are refused). Computed in float32 or better (lower-precision
    logits are upcast first, exactly; see :mod:`onelip.certify._inputs`), autocast off.

    Returns: shape (N,), float32 or the logits' dtype if wider (N = 0 gives an empty tensor).
    """
    _check_lipschitz(lipschitz)
    _check_logits(logits)
    logits = at_least_float32(logits)
    with no_autocast_for(logits):
        if is_binary_output(logits):
            if labels is None:
                return logits.reshape(-1).abs() / lipschitz
            y = checked_labels(logits, labels)
            return y * logits.reshape(-1) / lipschitz
        if labels is None:
            top2 = logits.topk(2, dim=1).values
            margin = top2[:, 0] - top2[:, 1]
        else:
            y = checked_labels(logits, labels)
            f_y = logits.gather(1, y[:, None])[:, 0]
            other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
            margin = f_y - other
        return margin / (math.sqrt(2) * lipschitz)


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"Expected logits to be a torch.Tensor, but got {type(logits).__name__}")
    if not is_binary_output(logits) and (logits.dim() != 2 or logits.shape[1] < 2):
        raise ValueError(f"Expected logits of shape (N,) or (N, K), got {tuple(logits.shape)}")


def last_layer_radius(logits: Tensor, weight: Tensor, labels: Tensor | None = None, *,
                      lipschitz: float = 1.0) -> Tensor:
    r"""Tighter exact radius when :math:`f = W h(x) + b` with h L-Lipschitz.

    :math:`r(x) = \min_{j \ne c} (f_c - f_j) / (L \|w_c - w_j\|)`, c the label (or the
    predicted class). Shapes: logits (N, K), weight (K, D) -> (N,). Labels and precision as
    for :func:`certified_radius`.
    """
    _check_lipschitz(lipschitz)
    _check_logits(logits)
    if is_binary_output(logits):
        raise ValueError(f"Expected multiclass logits (N, K), K >= 2, but got shape "
                         f"{tuple(logits.shape)}; for one output use certified_radius with "
                         "lipschitz=L·‖w‖")
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] != logits.shape[1]:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"Expected weight of shape ({logits.shape[1]}, D) for "
                         f"{logits.shape[1]} classes, but got {shape}")
    logits = at_least_float32(logits)
    with no_autocast_for(logits):
        c = logits.argmax(1) if labels is None else checked_labels(logits, labels)
        w = weight.detach().to(device=logits.device, dtype=logits.dtype)
        diff_norm = torch.cdist(w[None], w[None])[0]  # (K, K): ‖w_i − w_j‖
        f_c = logits.gather(1, c[:, None])  # (N, 1)
        num = f_c - logits  # (N, K)
        den = diff_norm[c]  # (N, K)
        ratio = num / den.clamp_min(1e-12)
        ratio = ratio.scatter(1, c[:, None], float("inf"))
        return ratio.amin(1) / lipschitz
