# SPDX-License-Identifier: MIT
r"""Losses of 1-Lipschitz classifiers, as per-sample values reduced by ``reduction=``.

Loss convention (onelip; see docs/losses.md for the mapping to deel-lip / deel-torchlip):

* KR is *minimised*: :math:`\mathcal L_{KR}(f) = E[f \mid y=-1] - E[f \mid y=+1]`.
* hinge uses the **full** margin: :math:`\max(0, m - y f(x))`.
* HKR is :math:`\mathcal L_{KR} + \alpha\,\mathcal L_m` with :math:`\alpha \ge 0`.
* τ-cross-entropy is :math:`CE(\tau f(x), y)` (not divided by τ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from onelip._validation import (
    binary_scores_and_signs,
    check_positive,
    class_indices,
    reduce,
)

__all__ = [
    "hinge_loss",
    "hkr_loss",
    "kr_loss",
    "multiclass_hinge_loss",
    "multiclass_hkr_loss",
    "multiclass_kr_loss",
    "tau_cross_entropy_loss",
]


def _binary_frequency(sign: Tensor, frequency: Tensor | None) -> tuple[Tensor, Tensor]:
    """Class frequencies (p(-1), p(+1)) of the batch, or the given global ones."""
    if frequency is None:
        p_pos = (sign > 0).to(sign.dtype).mean()
        return 1 - p_pos, p_pos
    return frequency[0].to(sign.dtype), frequency[1].to(sign.dtype)


def kr_loss(
    input: Tensor,
    target: Tensor,
    *,
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """Kantorovich–Rubinstein loss, minimised: :math:`E[f|y=-1] - E[f|y=+1]`.

    Per sample :math:`\\ell_n = -y_n f(x_n) / \\hat p(y_n)` with :math:`\\hat p` the batch
    frequency of the label (or ``frequency``, e.g. gathered across processes), so that the
    mean over the batch is exactly :math:`E_-[f] - E_+[f]`. Over 1-Lipschitz f its minimum
    is :math:`-W_1(P_+, P_-)`.

    Args:
        input: f(x), shape (N,) or (N, 1).
        target: labels in {0, 1} or {-1, +1}, shape (N,).
        frequency: optional (2,) tensor of label frequencies (p(-1), p(+1)).
    """
    f, y = binary_scores_and_signs(input, target)
    p_neg, p_pos = _binary_frequency(y, frequency)
    weight = torch.where(y > 0, 1 / p_pos.clamp_min(1e-12), 1 / p_neg.clamp_min(1e-12))
    return reduce(-y * f * weight, reduction)


def hinge_loss(
    input: Tensor, target: Tensor, *, margin: float = 1.0, reduction: str = "mean"
) -> Tensor:
    """Hinge loss with the full margin m: :math:`\\ell_n = \\max(0, m - y_n f(x_n))`.

    deel-torchlip's ``HingeMarginLoss(min_margin=m')`` is :math:`\\max(0, m'/2 - yf)`: m = m'/2.
    """
    check_positive("margin", margin, strict=False)
    f, y = binary_scores_and_signs(input, target)
    return reduce(F.relu(margin - y * f), reduction)


def hkr_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 10.0,
    margin: float = 1.0,
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """Hinge-KR loss :math:`\\mathcal L_{KR} + \\alpha\\,\\mathcal L_m`, α ≥ 0 (deel-lip's form).

    deel-torchlip ≥ 1.0 uses :math:`\\alpha_t\\,\\text{hinge}_{m'} - (1-\\alpha_t)\\,KR`; it is
    :math:`(1-\\alpha_t)` times ours with :math:`\\alpha = \\alpha_t/(1-\\alpha_t)`, m = m'/2.
    """
    check_positive("alpha", alpha, strict=False)
    kr = kr_loss(input, target, reduction="none", frequency=frequency)
    hinge = hinge_loss(input, target, margin=margin, reduction="none")
    return reduce(kr + alpha * hinge, reduction)


def _class_frequency(y: Tensor, k: int, dtype: torch.dtype, frequency: Tensor | None) -> Tensor:
    if frequency is not None:
        if frequency.shape != (k,):
            raise ValueError(
                f"Expected frequency of shape ({k},), but got {tuple(frequency.shape)}"
            )
        return frequency.to(dtype)
    return torch.bincount(y, minlength=k).to(dtype) / max(y.numel(), 1)


def multiclass_kr_loss(
    input: Tensor,
    target: Tensor,
    *,
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """One-vs-all KR, averaged over the K classes.

    .. math::
        \\mathcal L_{KR} = \\frac1K \\sum_{k=1}^K
            \\big(E[f_k \\mid y \\ne k] - E[f_k \\mid y = k]\\big)

    Per sample :math:`\\ell_n = \\frac1K \\big(-f_{y_n}/p_{y_n} +
    \\sum_{k \\ne y_n} f_k / (1 - p_k)\\big)` with :math:`p_k` the batch (or given) frequency.

    Shape: input (N, K), target (N,) integer in [0, K).
    """
    y = class_indices(input, target)
    n, k = input.shape
    p = _class_frequency(y, k, input.dtype, frequency)  # (K,)
    onehot = F.one_hot(y, k).to(input.dtype)  # (N, K)
    w_pos = 1 / p.clamp_min(1e-12)
    w_neg = 1 / (1 - p).clamp_min(1e-12)
    per = -onehot * input * w_pos + (1 - onehot) * input * w_neg  # (N, K)
    return reduce(per.sum(1) / k, reduction)


def multiclass_hinge_loss(
    input: Tensor,
    target: Tensor,
    *,
    margin: float = 1.0,
    mode: str = "one_vs_all",
    reduction: str = "mean",
) -> Tensor:
    """Multiclass hinge with the full margin m.

    * ``mode="one_vs_all"``: :math:`\\ell_n = \\max(0, m - f_{y}) + \\frac{1}{K-1}
      \\sum_{j \\ne y}\\max(0, m + f_j)` (deel-torchlip's form divided by K−1). It asks
      for :math:`f_y \\ge m \\ge -f_j`, i.e. a top-1 margin of 2m.
    * ``mode="top2"``: :math:`\\ell_n = \\max(0, m - (f_y - \\max_{j\\ne y} f_j))`: it asks
      for a margin m, i.e. a certified radius :math:`m/\\sqrt2`.

    Shape: input (N, K), target (N,) integer in [0, K).
    """
    check_positive("margin", margin, strict=False)
    y = class_indices(input, target)
    k = input.shape[1]
    onehot = F.one_hot(y, k).to(torch.bool)
    f_y = input.gather(1, y[:, None])[:, 0]  # (N,)
    if mode == "one_vs_all":
        neg = F.relu(margin + input).masked_fill(onehot, 0).sum(1) / (k - 1)
        loss = F.relu(margin - f_y) + neg
    elif mode == "top2":
        other = input.masked_fill(onehot, float("-inf")).amax(1)
        loss = F.relu(margin - (f_y - other))
    else:
        raise ValueError(f"Expected mode 'one_vs_all' or 'top2', but got mode={mode!r}")
    return reduce(loss, reduction)


def multiclass_hkr_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 10.0,
    margin: float = 1.0,
    mode: str = "one_vs_all",
    reduction: str = "mean",
    frequency: Tensor | None = None,
) -> Tensor:
    """Multiclass HKR: :func:`multiclass_kr_loss` + α · :func:`multiclass_hinge_loss`."""
    check_positive("alpha", alpha, strict=False)
    kr = multiclass_kr_loss(input, target, reduction="none", frequency=frequency)
    hinge = multiclass_hinge_loss(
        input, target, margin=margin, mode=mode, reduction="none"
    )
    return reduce(kr + alpha * hinge, reduction)


def tau_cross_entropy_loss(
    input: Tensor, target: Tensor, *, tau: float = 8.0, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy at temperature τ: :math:`\\ell_n = CE(\\tau f(x_n), y_n)`.

    Small τ → large margins (robust); large τ → accuracy. deel-torchlip's
    ``TauCrossEntropyLoss`` is ours divided by τ.

    Shape: input (N, K), target (N,) integer in [0, K).
    """
    check_positive("tau", tau)
    y = class_indices(input, target)
    return reduce(F.cross_entropy(tau * input, y, reduction="none"), reduction)
