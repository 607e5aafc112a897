# SPDX-License-Identifier: MIT
"""Certified accuracy of a model on labelled points (:func:`certified_accuracy`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from onelip._validation import is_binary_output
from onelip.certify._inputs import (
    check_eps,
    check_label_shape,
    check_model_precision,
    check_points,
    check_positive_int,
    low_precision,
    no_autocast_for,
)
from onelip.certify.bounds import lipschitz_bound, split_last_linear
from onelip.certify.radius import certified_radius, last_layer_radius
from onelip.nn.utils import eval_mode

__all__ = ["certified_accuracy"]


def _batches(x: Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield slice(i, i + batch_size)


@torch.no_grad()
def certified_accuracy(model: nn.Module, x: Tensor, y: Tensor,
                       eps: float | Sequence[float] = (0.5,), *, method: str = "margin",
                       lipschitz: float | None = None, batch_size: int = 1024) -> dict:
    """Clean accuracy and certified accuracy at each ε (fraction of points correctly classified
    with certified radius > ε), in eval mode.

    Args:
        x: the points, (N, *input_shape), N >= 1, finite.
        y: N labels, shape (N,) or (N, 1), as for :func:`certified_radius`: class indices in
            [0, K) for (N, K) outputs (integer-valued floats accepted; 3.7, a one-hot (N, K)
            tensor or a length-1 ``y`` are errors, never truncated or broadcast), {0, 1} or
            {−1, +1} for one output (anything else is an error).
        eps: one radius or a sequence of them, each finite and >= 0; one number gives the
            same result as a list of one (``{"certified": {eps: ...}}``).
        method: ``"margin"`` (margin/(√2 L) or |f|/L) or ``"last_layer"``
            (:func:`last_layer_radius`, needs a model ending in a linear layer).
        lipschitz: the model's bound; default :func:`lipschitz_bound`.
        batch_size: points per forward.

    Precision: the forward runs with any ambient ``torch.autocast`` switched off, in the
    model's own dtype (float32 or float64; a bf16/fp16 model is refused): the certificate is
    about the model as :func:`lipschitz_bound` bounds it, not its autocast variant (see
    :mod:`onelip.certify`). Points of a lower precision than the model are upcast (exactly).

    Returns:
        ``{"clean": float, "certified": {eps: float}, "radii": Tensor (N,)}`` (radii in the
        model's dtype, float32 or wider).
    """
    eps_list = check_eps(eps)
    if method not in ("margin", "last_layer"):
        raise ValueError(f"Unknown method {method!r}; expected 'margin' or 'last_layer'")
    batch_size = check_positive_int("batch_size", batch_size)
    x = check_points(x)
    if x.shape[0] == 0:
        raise ValueError("x holds no points (shape "
                         f"{tuple(x.shape)}): certified accuracy of an empty set is undefined")
    y = check_label_shape(y, x.shape[0])
    dtype = check_model_precision(model)
    if x.is_floating_point() and low_precision(x.dtype):
        x = x.to(dtype or torch.float32)
    with eval_mode(model), no_autocast_for(x):
        if method == "margin":
            lip = lipschitz_bound(model) if lipschitz is None else lipschitz
            logits = torch.cat([model(x[s]) for s in _batches(x, batch_size)])
            radii = certified_radius(logits, y, lipschitz=lip)
        else:
            split = split_last_linear(model)
            if split is None:
                raise ValueError("method='last_layer' needs a Sequential ending in a linear "
                                 "layer (and whose forward is the composition of its "
                                 "children); use method='margin'")
            body, w, b = split
            lip = lipschitz_bound(body) if lipschitz is None else lipschitz
            feats = torch.cat([body(x[s]) for s in _batches(x, batch_size)])
            logits = feats @ w.mT + (b if b is not None else 0)
            if is_binary_output(logits):
                radii = certified_radius(logits, y, lipschitz=lip * float(w.norm()))
            else:
                radii = last_layer_radius(logits, w, y, lipschitz=lip)
    correct = radii > 0
    return {
        "clean": float(correct.float().mean()),
        "certified": {e: float((radii > e).float().mean()) for e in eps_list},
        "radii": radii,
    }
