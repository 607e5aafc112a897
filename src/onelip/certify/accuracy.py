# SPDX-License-Identifier: MIT
"""Certified accuracy of a model on labelled points (:func:`certified_accuracy`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from onelip._validation import check_finite, is_binary_output
from onelip.certify.bounds import lipschitz_bound, split_last_linear
from onelip.certify.radius import certified_radius, last_layer_radius
from onelip.nn import eval_mode

__all__ = ["certified_accuracy"]


def _batches(x: Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield slice(i, i + batch_size)


@torch.no_grad()
def certified_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: Sequence[float] = (0.5,),
                       *, method: str = "margin", lipschitz: float | None = None,
                       batch_size: int = 1024) -> dict:
    """Clean accuracy and certified accuracy at each ε (fraction of points correctly classified
    with certified radius > ε), in eval mode.

    Args:
        y: labels, as for :func:`certified_radius`: class indices in [0, K) for (N, K)
            outputs, {0, 1} or {−1, +1} for one output (anything else is an error).
        method: ``"margin"`` (margin/(√2 L) or |f|/L) or ``"last_layer"``
            (:func:`last_layer_radius`, needs a model ending in a linear layer).
        lipschitz: the model's bound; default :func:`lipschitz_bound`.

    Returns:
        ``{"clean": float, "certified": {eps: float}, "radii": Tensor (N,)}``.
    """
    if any(e < 0 or not math.isfinite(e) for e in eps):
        raise ValueError(f"Expected non-negative finite eps, but got {list(eps)}")
    check_finite("x", x)
    with eval_mode(model):
        if method == "margin":
            lip = lipschitz_bound(model) if lipschitz is None else lipschitz
            logits = torch.cat([model(x[s]) for s in _batches(x, batch_size)])
            radii = certified_radius(logits, y, lipschitz=lip)
        elif method == "last_layer":
            split = split_last_linear(model)
            if split is None:
                raise ValueError("method='last_layer' needs a Sequential ending in a linear layer")
            body, w, b = split
            lip = lipschitz_bound(body) if lipschitz is None else lipschitz
            feats = torch.cat([body(x[s]) for s in _batches(x, batch_size)])
            logits = feats @ w.mT + (b if b is not None else 0)
            if is_binary_output(logits):
                radii = certified_radius(logits, y, lipschitz=lip * float(w.norm()))
            else:
                radii = last_layer_radius(logits, w, y, lipschitz=lip)
        else:
            raise ValueError(f"Unknown method {method!r}; expected 'margin' or 'last_layer'")
    correct = radii > 0
    return {
        "clean": float(correct.float().mean()),
        "certified": {float(e): float((radii > e).float().mean()) for e in eps},
        "radii": radii,
    }
