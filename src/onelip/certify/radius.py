# SPDX-License-Identifier: MIT
r"""Certified radii from logits: :math:`|f|/L` (binary), :math:`M/(\sqrt2 L)` (multiclass
margin), and the exact last-layer radius :math:`\min_{j\ne y}(f_y - f_j)/(L\|w_y - w_j\|)`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onelip._validation import binary_scores_and_signs, class_indices, is_binary_output

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

    Returns: shape (N,).
    """
    _check_lipschitz(lipschitz)
    if is_binary_output(logits):
        if labels is None:
            return logits.reshape(-1).abs() / lipschitz
        f, y = binary_scores_and_signs(logits, labels)
        return y * f / lipschitz
    if logits.dim() != 2:
        raise ValueError(f"Expected logits of shape (N,) or (N, K), got {tuple(logits.shape)}")
    if labels is None:
        top2 = logits.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    else:
        y = class_indices(logits, labels)
        f_y = logits.gather(1, y[:, None])[:, 0]
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        margin = f_y - other
    return margin / (math.sqrt(2) * lipschitz)


def last_layer_radius(logits: Tensor, weight: Tensor, labels: Tensor | None = None, *,
                      lipschitz: float = 1.0) -> Tensor:
    r"""Tighter exact radius when :math:`f = W h(x) + b` with h L-Lipschitz.

    :math:`r(x) = \min_{j \ne c} (f_c - f_j) / (L \|w_c - w_j\|)`, c the label (or the
    predicted class). Shapes: logits (N, K), weight (K, D) -> (N,).
    """
    _check_lipschitz(lipschitz)
    c = logits.argmax(1) if labels is None else class_indices(logits, labels)
    w = weight.detach().to(logits.dtype)
    diff_norm = torch.cdist(w[None], w[None])[0]  # (K, K): ‖w_i − w_j‖
    f_c = logits.gather(1, c[:, None])  # (N, 1)
    num = f_c - logits  # (N, K)
    den = diff_norm[c]  # (N, K)
    ratio = num / den.clamp_min(1e-12)
    ratio = ratio.scatter(1, c[:, None], float("inf"))
    return ratio.amin(1) / lipschitz
