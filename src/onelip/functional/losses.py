# SPDX-License-Identifier: MIT
r"""Losses of 1-Lipschitz classifiers, as per-sample values reduced by ``reduction=``.

Loss convention (onelip; see docs/losses.md for the mapping to deel-lip / deel-torchlip):

* KR is *minimised*: :math:`\mathcal L_{KR}(f) = E[f \mid y=-1] - E[f \mid y=+1]`.
* hinge uses the **full** margin: :math:`\max(0, m - y f(x))`.
* HKR is :math:`\mathcal L_{KR} + \alpha\,\mathcal L_m` with :math:`\alpha \ge 0`.
* τ-cross-entropy is :math:`CE(\tau f(x), y)` (not divided by τ).
* the margin-aware cross-entropies of the records (offset CE, EMMA, Logit Annealing) are
  :math:`T \cdot CE(z/T, y)` on shifted logits z, as their references write them.
"""

from __future__ import annotations

import math

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
    "emma_loss",
    "hinge_loss",
    "hkr_loss",
    "kr_loss",
    "logit_annealing_loss",
    "multiclass_hinge_loss",
    "multiclass_hkr_loss",
    "multiclass_kr_loss",
    "offset_cross_entropy_loss",
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


# ==== margin-aware cross-entropies (the records': Prach–Lampert, EMMA, Logit Annealing) ======
# Note [m_j = √2·L]: the reference code (BRONet / LiResNet margin_layer.py) bounds the
# Lipschitz constant of the logit difference y_j − y_t by L·‖w_t − w_j‖, with L the backbone's
# bound and w the rows of its (row-normalised) head. onelip's networks carry one certified
# bound L for the whole map x ↦ y; then y_j − y_t is √2·L-Lipschitz (the certificate's
# margin/√2), so every j ≠ t gets m_j = √2·L and the true class m_t = 0.

_PRACH_OFFSET = 2 * math.sqrt(2) * 36 / 255  # Prach et al.'s 2√2·ε at ε = 36/255


def _check_margin_args(
    *,
    epsilon: float | None = None,
    offset: float | None = None,
    temperature: float | None = None,
    gamma: float | None = None,
    lipschitz: float | None = None,
) -> None:
    """One-line ValueErrors for the hyper-parameters of the margin-aware losses."""
    for name, value, strict in (("epsilon", epsilon, False), ("offset", offset, False),
                                ("temperature", temperature, True), ("gamma", gamma, False),
                                ("lipschitz", lipschitz, True)):
        if value is not None:
            check_positive(name, value, strict=strict)


def _offset_logits(input: Tensor, target: Tensor, offset: float) -> Tensor:
    """:math:`y - \\xi e_t`: the true-class logit lowered by ``offset``; (N, K) → (N, K)."""
    if offset == 0:
        return input
    return input - offset * F.one_hot(target, input.shape[1]).to(input.dtype)


def _emma_logits(input: Tensor, target: Tensor, *, epsilon: float, lipschitz: float) -> Tensor:
    """EMMA's worst-case logits y′ (Hu et al. 2023), shape (N, K) → (N, K).

    With the logits shifted by the true one, :math:`y_j \\leftarrow y_j - y_t`, and
    :math:`m_j = \\sqrt2 L` for :math:`j \\ne t`, :math:`m_t = 0`:

    .. math::
        r_j = \\operatorname{clip}\\big(-y_j / (m_j \\varepsilon),\\ 0.01,\\ 1\\big)
              \\ \\text{(detached)}, \\qquad
        y'_j = y_j + r_j\\,\\varepsilon\\, m_j.

    Each other class is pushed up by its worst case within radius
    :math:`\\min(\\varepsilon, \\text{its certified radius})` (at least 1 % of ε); r carries no
    gradient. ``target`` is already checked (int64 in [0, K)).
    """
    y = input - input.gather(1, target[:, None])  # y_t = 0
    if epsilon == 0:
        return y
    m = math.sqrt(2) * lipschitz  # the pairwise factor, Note [m_j = √2·L]
    radius = (-y / (m * epsilon)).clamp(0.01, 1).detach()
    shift = (radius * (epsilon * m)).masked_fill(
        F.one_hot(target, input.shape[1]).to(torch.bool), 0)
    return y + shift


def offset_cross_entropy_loss(
    input: Tensor,
    target: Tensor,
    *,
    offset: float = _PRACH_OFFSET,
    temperature: float = 0.25,
    reduction: str = "mean",
) -> Tensor:
    """Prach & Lampert's offset cross-entropy, the true-class logit lowered by ξ:

    .. math::
        \\ell_n = T \\cdot CE\\big((y_n - \\xi e_{t_n}) / T,\\ t_n\\big).

    The loss keeps pushing until the margin :math:`y_t - \\max_{j \\ne t} y_j` exceeds ξ by a
    few T; ξ = 2√2·ε (the default, ε = 36/255: ξ = 0.39931) is twice the logit margin √2·ε
    that certifies radius ε for a 1-Lipschitz network. The defaults (ξ = 2√2·36/255,
    T = 1/4) are Prach et al.'s (CVPR 2024, berndprach/1LipschitzLayersCompared
    ``LipCrossEntropyLoss(margin=ξ, temperature=T)``; Prach's
    ``OffsetCrossEntropy(offset=ξ, temperature=T)`` elsewhere, the same). Invariant to adding
    a constant to every logit.

    Args:
        input: logits y, shape (N, K), K ≥ 2.
        target: class indices t, shape (N,), integers in [0, K).
        offset: ξ ≥ 0 (logit units).
        temperature: T > 0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape (N,)).
    """
    _check_margin_args(offset=offset, temperature=temperature)
    t = class_indices(input, target)
    z = _offset_logits(input, t, offset) / temperature
    return reduce(temperature * F.cross_entropy(z, t, reduction="none"), reduction)


def emma_loss(
    input: Tensor,
    target: Tensor,
    *,
    epsilon: float = 36 / 255,
    lipschitz: float = 1.0,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """EMMA (Hu et al., NeurIPS 2023): cross-entropy on worst-case logits within radius ε.

    With :math:`y_j \\leftarrow y_j - y_t`, :math:`m_j = \\sqrt2 L` (:math:`j \\ne t`),
    :math:`m_t = 0` and the detached :math:`r_j = \\operatorname{clip}(-y_j/(m_j\\varepsilon),
    0.01, 1)`:

    .. math::
        y'_j = y_j + r_j\\,\\varepsilon\\,m_j, \\qquad \\ell_n = T \\cdot CE(y'_n / T,\\ t_n).

    T = 1 is the reference's loss (``emma_loss`` in hukkai/liresnet and ntuaislab/BRONet
    ``models/margin_layer.py``). The reference uses :math:`m_j = L \\lVert w_t - w_j\\rVert`
    with the rows w of its row-normalised head and L the backbone's bound; onelip certifies the
    whole network with one bound L, hence :math:`m_j = \\sqrt2 L`. With ε = 0 it is
    :math:`T \\cdot CE(y/T)`. Invariant to adding a constant to every logit.

    Args:
        input: logits y, shape (N, K), K ≥ 2.
        target: class indices t, shape (N,), integers in [0, K).
        epsilon: ε ≥ 0, the radius in input units.
        lipschitz: L > 0, the certified Lipschitz bound of the whole network
            (``onelip.certify.lipschitz_bound(model)``; e.g. about 4.1 for a CIFAR-10 net
            that starts with Normalize, 1/σ of the smallest channel σ).
        temperature: T > 0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape (N,)).
    """
    _check_margin_args(epsilon=epsilon, temperature=temperature, lipschitz=lipschitz)
    t = class_indices(input, target)
    z = _emma_logits(input, t, epsilon=epsilon, lipschitz=lipschitz) / temperature
    return reduce(temperature * F.cross_entropy(z, t, reduction="none"), reduction)


def logit_annealing_loss(
    input: Tensor,
    target: Tensor,
    *,
    epsilon: float = 36 / 255,
    offset: float = 2.0,
    temperature: float = 0.75,
    gamma: float = 5.0,
    lipschitz: float = 1.0,
    emma: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Logit Annealing (Lai et al., ICML 2025): a focal, offset cross-entropy on EMMA's logits.

    With z = y′ (:func:`emma_loss`'s worst-case logits; z = y if ``emma=False``):

    .. math::
        CE_n = CE\\big((z_n - \\xi e_{t_n}) / T,\\ t_n\\big), \\quad
        p_{t,n} = e^{-CE_n}, \\quad
        \\ell_n = T\\,(1 - p_{t,n})^{\\gamma}\\,CE_n.

    The focal factor down-weights points that already have a margin. Defaults γ = 5,
    T = 0.75, ξ = 2.0 are the reference's CIFAR-10 configuration (ntuaislab/BRONet
    ``logit_annealing_loss`` / ``_logit_annealing_loss`` in ``bronet/models/margin_layer.py``,
    ``lip_reg=True``; onelip's √2·L replaces its :math:`L\\lVert w_t - w_j\\rVert`, see
    :func:`emma_loss`). With γ = 0 and ``emma=False`` it is
    :func:`offset_cross_entropy_loss` (offset ξ, temperature T). :math:`1 - p_t` is computed
    as :math:`-\\operatorname{expm1}(-CE_n)`, and floored at the dtype's smallest normal
    number inside the power, so values and gradients stay finite as :math:`p_t \\to 1`.

    Args:
        input: logits y, shape (N, K), K ≥ 2.
        target: class indices t, shape (N,), integers in [0, K).
        epsilon: ε ≥ 0 of the EMMA shift (unused if ``emma=False``).
        offset: ξ ≥ 0, subtracted from the true-class logit.
        temperature: T > 0.
        gamma: γ ≥ 0, the focal exponent (0: no annealing).
        lipschitz: L > 0, the network's certified bound (see :func:`emma_loss`).
        emma: apply the EMMA shift first (the reference's ``lip_reg``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape (N,)).
    """
    _check_margin_args(epsilon=epsilon, offset=offset, temperature=temperature, gamma=gamma,
                       lipschitz=lipschitz)
    t = class_indices(input, target)
    z = _emma_logits(input, t, epsilon=epsilon, lipschitz=lipschitz) if emma else input
    ce = F.cross_entropy(_offset_logits(z, t, offset) / temperature, t, reduction="none")
    if gamma == 0:
        return reduce(temperature * ce, reduction)
    # 1 − p_t without cancellation; the floor keeps q^(γ−1) finite in the backward at q = 0
    q = (-torch.expm1(-ce)).clamp_min(torch.finfo(ce.dtype).tiny)
    return reduce(temperature * q.pow(gamma) * ce, reduction)
