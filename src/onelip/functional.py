# SPDX-License-Identifier: MIT
"""The stateless math behind onelip's layers and losses.

Layers: :func:`group_sort`, :func:`full_sort`, :func:`polar_bjorck`, :func:`bjorck_step`,
:func:`bjorck1_linear`, :func:`spectral_norm_exact`, :func:`power_iteration`.

Losses (per-sample values reduced by ``reduction=``): :func:`kr_loss`, :func:`hinge_loss`,
:func:`hkr_loss`, :func:`multiclass_kr_loss`, :func:`multiclass_hinge_loss`,
:func:`multiclass_hkr_loss`, :func:`tau_cross_entropy_loss`.

Loss convention (onelip; see docs/losses.md for the mapping to deel-lip / deel-torchlip):

* KR is *minimised*: :math:`\\mathcal L_{KR}(f) = E[f \\mid y=-1] - E[f \\mid y=+1]`.
* hinge uses the **full** margin: :math:`\\max(0, m - y f(x))`.
* HKR is :math:`\\mathcal L_{KR} + \\alpha\\,\\mathcal L_m` with :math:`\\alpha \\ge 0`.
* τ-cross-entropy is :math:`CE(\\tau f(x), y)` (not divided by τ).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from onelip._checks import (
    binary_scores_and_signs,
    check_positive,
    class_indices,
    reduce,
)

__all__ = [
    "bjorck1_linear",
    "bjorck_step",
    "full_sort",
    "gram_row_sum_bound",
    "group_sort",
    "hinge_loss",
    "hkr_loss",
    "kr_loss",
    "multiclass_hinge_loss",
    "multiclass_hkr_loss",
    "multiclass_kr_loss",
    "polar_bjorck",
    "power_iteration",
    "spectral_norm_exact",
    "tau_cross_entropy_loss",
]


# ==== activations ===========================================================================


def group_sort(x: Tensor, *, group_size: int = 2, dim: int = 1) -> Tensor:
    """Sort each group of ``group_size`` consecutive channels along ``dim`` (ascending).

    On each linear piece GroupSort is a permutation matrix, so it is 1-Lipschitz and
    gradient-norm preserving (Anil et al., ICML 2019). ``group_size=2`` is MaxMin.

    Shape: :math:`(N, C, *) \\to (N, C, *)` with ``C % group_size == 0``.
    """
    c = x.shape[dim]
    if group_size < 1 or c % group_size != 0:
        raise ValueError(
            f"Expected group_size to divide the {c} channels of dim {dim}, "
            f"but got group_size={group_size}"
        )
    if group_size == 1:
        return x
    dim = dim % x.dim()
    shape = x.shape
    g = x.reshape(*shape[:dim], c // group_size, group_size, *shape[dim + 1 :])  # (.., C/g, g, ..)
    if group_size == 2:
        a, b = g.unbind(dim + 1)
        out = torch.stack((torch.minimum(a, b), torch.maximum(a, b)), dim=dim + 1)
    else:
        out = torch.sort(g, dim=dim + 1).values
    return out.reshape(shape)


def full_sort(x: Tensor, *, dim: int = 1) -> Tensor:
    """Sort all channels along ``dim``: GroupSort with one group. 1-Lipschitz."""
    return torch.sort(x, dim=dim).values


# ==== orthonormalisation ====================================================================


def _small_gram(w: Tensor) -> Tensor:
    """Gram matrix on the smaller side: W Wᵀ (out ≤ in) or Wᵀ W (out > in)."""
    return w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w


def gram_row_sum_bound(gram: Tensor) -> Tensor:
    """A certified upper bound of :math:`\\sigma_{\\max}(W)^2` from the Gram matrix.

    :math:`\\|G\\|_2 \\le \\|G\\|_\\infty = \\max_i \\sum_j |G_{ij}|` for any matrix, and
    :math:`\\|G\\|_2 = \\sigma_{\\max}(W)^2` for :math:`G = W^\\top W`.
    """
    return gram.abs().sum(-1).amax(-1)


def bjorck_step(w: Tensor, gram: Tensor | None = None) -> Tensor:
    """One Björck–Bowie step :math:`W (\\tfrac32 I - \\tfrac12 W^\\top W)`.

    On singular values it is :math:`\\sigma \\mapsto \\tfrac32\\sigma - \\tfrac12\\sigma^3`,
    whose maximum over :math:`[0, 2]` is 1 (at :math:`\\sigma = 1`): the result has spectral
    norm :math:`\\le 1` whenever :math:`\\sigma_{\\max}(W) \\le 2`, and the same singular
    vectors (the polar factor :math:`UV^\\top` is unchanged).

    Shape: (out, in) -> (out, in).
    """
    if gram is None:
        gram = _small_gram(w)
    eye = torch.eye(gram.shape[-1], dtype=w.dtype, device=w.device)
    a = 1.5 * eye - 0.5 * gram
    return a @ w if w.shape[-2] <= w.shape[-1] else w @ a


def polar_bjorck(
    w: Tensor,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    dtype: torch.dtype | None = torch.float64,
) -> tuple[Tensor, float]:
    """The orthogonal polar factor :math:`Q = U V^\\top` of :math:`W = U \\Sigma V^\\top`.

    Björck–Bowie iterations from a *certified* start: if the Gram row-sum bound
    :math:`b \\ge \\sigma_{\\max}^2` exceeds 2.5 the iteration starts from :math:`W/\\sqrt b`
    (all singular values in (0, 1], where the iteration converges), otherwise from
    :math:`W` (warm start: a near-orthogonal latent converges quadratically in a few steps).
    It stops when :math:`e = \\|G - I\\|_F \\le` ``tol`` (:math:`G` the Gram matrix of the
    iterate) and finally divides by :math:`\\sqrt{1 + e}`, so that the result satisfies
    :math:`\\sigma_{\\max}(Q) \\le 1` *exactly* (up to rounding) even if the tolerance was not
    reached, and :math:`\\sigma_{\\min}(Q) \\ge \\sqrt{(1-e)/(1+e)}`.

    A rank-deficient :math:`W` keeps its zero singular values (no orthogonal factor exists).

    Args:
        w: the latent weight, shape (out, in).
        tol: stop when :math:`\\|G - I\\|_F \\le` tol.
        max_iter: at most this many steps.
        dtype: compute in this dtype (float64 by default: the float32 rounding floor of
            :math:`\\|G-I\\|_F` for a 512×512 matrix is ~1e-3). ``None`` keeps ``w.dtype``.

    Returns:
        ``(Q, e)``: Q in ``w.dtype``, shape (out, in); e the final :math:`\\|G-I\\|_F`.
    """
    out_dtype = w.dtype
    q = w.detach().to(dtype) if dtype is not None else w
    gram = _small_gram(q)
    bound = float(gram_row_sum_bound(gram))
    if not math.isfinite(bound) or bound == 0.0:
        raise ValueError("Cannot orthonormalise a weight that is zero, NaN or infinite")
    if bound > 2.5:
        q = q / math.sqrt(bound)
        gram = gram / bound
    eye = torch.eye(gram.shape[-1], dtype=q.dtype, device=q.device)
    err = float(torch.linalg.matrix_norm(gram - eye))
    for _ in range(max_iter):
        if err <= tol:
            break
        q = bjorck_step(q, gram)
        gram = _small_gram(q)
        new_err = float(torch.linalg.matrix_norm(gram - eye))
        if new_err >= err and err < 1e-3:  # rounding floor reached
            err = new_err
            break
        err = new_err
    q = q / math.sqrt(1.0 + err)
    return q.to(out_dtype), err


def bjorck1_linear(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """:math:`y = x\\,Q^\\top + b` with :math:`Q = W(\\tfrac32 I - \\tfrac12 W^\\top W)`,
    applied without forming Q.

    :math:`x Q^\\top = \\tfrac32\\,x W^\\top - \\tfrac12\\,((x W^\\top) W) W^\\top`: three
    (N × d × d) products instead of two (d × d × d) ones, which is cheaper when the batch
    N is smaller than the width d. :math:`\\|Q\\|_2 \\le 1` when :math:`\\sigma_{\\max}(W) \\le 2`
    (:func:`bjorck_step`).

    Shape: x (*, in), w (out, in) -> (*, out).
    """
    xw = x @ w.mT  # (*, out)
    y = 1.5 * xw - 0.5 * ((xw @ w) @ w.mT)  # (*, out)
    if bias is not None:
        y = y + bias
    return y


# ==== spectral norm =========================================================================


def spectral_norm_exact(w: Tensor) -> Tensor:
    """:math:`\\sigma_{\\max}(W)` by SVD in float64 (exact to float64 rounding).

    Shape: (out, in) -> scalar, in ``w.dtype``.
    """
    return torch.linalg.matrix_norm(w.detach().double(), ord=2).to(w.dtype)


@torch.no_grad()
def power_iteration(w: Tensor, u: Tensor, v: Tensor, *, n_iter: int = 1) -> None:
    """Update the persistent singular vectors ``u`` (out,), ``v`` (in,) of ``w`` in place.

    :math:`v \\leftarrow W^\\top u / \\|W^\\top u\\|`, :math:`u \\leftarrow W v / \\|W v\\|`.
    Then :math:`\\hat\\sigma = u^\\top W v \\le \\sigma_{\\max}(W)` (a lower bound that converges
    to it).
    """
    for _ in range(n_iter):
        v.copy_(F.normalize(w.mT @ u, dim=0, eps=1e-12))
        u.copy_(F.normalize(w @ v, dim=0, eps=1e-12))


# ==== losses: binary ========================================================================


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


# ==== losses: multiclass ====================================================================


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
        \\mathcal L_{KR} = \\frac1K \\sum_{k=1}^K \\big(E[f_k \\mid y \\ne k] - E[f_k \\mid y = k]\\big)

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
