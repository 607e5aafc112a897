# SPDX-License-Identifier: MIT
r"""Losses for 1-Lipschitz classifiers; thin ``nn.Module`` wrappers over
:mod:`onelip.functional`.

onelip's convention (one for all losses, binary and multiclass):

* **KR** is minimised: :math:`\mathcal L_{KR}(f) = E[f\mid y=-1] - E[f\mid y=+1]`.
* **hinge** uses the full margin m: :math:`\max(0,\, m - y f(x))`.
* **HKR** is :math:`\mathcal L_{KR} + \alpha\,\mathcal L_m`, :math:`\alpha \ge 0`.
* **τ-CE** is :math:`CE(\tau f(x), y)`.

Mapping to the peers (docs/losses.md, which gives the versions it was checked against):

============================  =========================================================
peer                          onelip equivalent
============================  =========================================================
deel-lip (TF) HKR(α, m)       HKRLoss(alpha=α, margin=m)
deel-torchlip hinge m'        HingeLoss(margin=m'/2)  (torchlip uses relu(m'/2 − yf))
deel-torchlip HKR(α_t, m')    (1−α_t) · HKRLoss(alpha=α_t/(1−α_t), margin=m'/2)
deel-torchlip KR              −KRLoss  (torchlip's is maximised)
deel-torchlip τ-CE            TauCrossEntropyLoss(tau=τ) / τ
============================  =========================================================

Every loss takes ``reduction="mean" | "sum" | "none"``; ``"none"`` returns shape (N,).
The KR losses (and HKR) also take ``frequency=`` in ``forward``: the class frequencies of the
whole batch when it is split across processes. They say so by the class attribute
``takes_frequency = True``, which :meth:`onelip.distributed.Context.loss` reads (it is False
on the others); a loss of your own whose ``forward`` takes ``frequency=`` declares it the same
way, or it is called without it.

The margin-aware cross-entropies of the records (:class:`OffsetCrossEntropyLoss`,
:class:`EMMALoss`, :class:`LogitAnnealingLoss`; docs/losses.md has their math and sources)
follow the **ε-ramp protocol**: their class attribute ``ramps_epsilon`` is True (False on the
others), and each instance has a plain float ``epsilon_scale`` (1.0 at construction; not a
buffer, not in the ``state_dict``). A trainer that ramps ε sets ``loss.epsilon_scale = s`` with
s ∈ [0, 1] before each step (s = 0 at the start); ``forward`` then uses ε·s for the EMMA shift
(:class:`EMMALoss`, :class:`LogitAnnealingLoss`, whose offset ξ stays) and ξ·s for the offset
of :class:`OffsetCrossEntropyLoss`.

Binary losses take scores of shape (N,) or (N, 1) and labels all in {0, 1} or all in
{−1, +1} (int, float or bool; 1 is the positive class), the rule :mod:`onelip.certify` also
applies; other values (2, 0.5, a mix of 0 and −1) are a ValueError. Multiclass losses take
scores (N, K) and integer labels in [0, K).
"""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor, nn

from onelip import functional as F
from onelip._validation import check_positive, check_reduction

__all__ = [
    "EMMALoss",
    "HKRLoss",
    "HingeLoss",
    "KRLoss",
    "LogitAnnealingLoss",
    "MulticlassHKRLoss",
    "MulticlassHingeLoss",
    "MulticlassKRLoss",
    "OffsetCrossEntropyLoss",
    "TauCrossEntropyLoss",
]


class _Loss(nn.Module):
    reduction: str
    # True where forward(input, target, *, frequency=None) takes the global class frequencies
    takes_frequency: ClassVar[bool] = False
    # True where forward scales its ε (or offset) by the instance's float ``epsilon_scale``
    ramps_epsilon: ClassVar[bool] = False

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction


class KRLoss(_Loss):
    r"""Kantorovich–Rubinstein loss :math:`E[f\mid y=-1] - E[f\mid y=+1]` (minimised).

    Its minimum over 1-Lipschitz f is :math:`-W_1(P_+, P_-)`: f becomes the WGAN critic
    (a Kantorovich potential). Per sample :math:`\ell_n = -y_n f(x_n)/\hat p(y_n)`.

    Shape: input (N,) or (N, 1); target (N,). Output: scalar, or (N,) if ``"none"``.
    """

    takes_frequency: ClassVar[bool] = True

    def forward(self, input: Tensor, target: Tensor, *, frequency: Tensor | None = None) -> Tensor:
        return F.kr_loss(input, target, reduction=self.reduction, frequency=frequency)


class HingeLoss(_Loss):
    r"""Hinge :math:`\ell_n = \max(0, m - y_n f(x_n))` with the full margin m."""

    def __init__(self, margin: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("margin", margin, strict=False)
        self.margin = margin

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.hinge_loss(input, target, margin=self.margin, reduction=self.reduction)


class HKRLoss(_Loss):
    r"""Hinge-KR: :math:`\mathcal L_{KR} + \alpha\,\mathcal L_m`."""

    takes_frequency: ClassVar[bool] = True

    def __init__(self, alpha: float = 10.0, margin: float = 1.0, *,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("alpha", alpha, strict=False)
        check_positive("margin", margin, strict=False)
        self.alpha, self.margin = alpha, margin

    def forward(self, input: Tensor, target: Tensor, *, frequency: Tensor | None = None) -> Tensor:
        return F.hkr_loss(input, target, alpha=self.alpha, margin=self.margin,
                          reduction=self.reduction, frequency=frequency)


class MulticlassKRLoss(_Loss):
    r"""One-vs-all KR averaged over classes:
    :math:`\frac1K\sum_k (E[f_k\mid y\ne k] - E[f_k\mid y=k])`.

    Shape: input (N, K), target (N,) in [0, K).
    """

    takes_frequency: ClassVar[bool] = True

    def forward(self, input: Tensor, target: Tensor, *, frequency: Tensor | None = None) -> Tensor:
        return F.multiclass_kr_loss(input, target, reduction=self.reduction, frequency=frequency)


class MulticlassHingeLoss(_Loss):
    r"""Multiclass hinge, ``mode="one_vs_all"`` (default) or ``"top2"``
    (:math:`\max(0, m - (f_y - \max_{j\ne y} f_j))`); see
    :func:`onelip.functional.multiclass_hinge_loss`."""

    def __init__(self, margin: float = 1.0, *, mode: str = "one_vs_all",
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("margin", margin, strict=False)
        if mode not in ("one_vs_all", "top2"):
            raise ValueError(f"Expected mode 'one_vs_all' or 'top2', but got mode={mode!r}")
        self.margin, self.mode = margin, mode

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multiclass_hinge_loss(input, target, margin=self.margin, mode=self.mode,
                                       reduction=self.reduction)


class MulticlassHKRLoss(_Loss):
    r"""Multiclass HKR: :class:`MulticlassKRLoss` + α · :class:`MulticlassHingeLoss`."""

    takes_frequency: ClassVar[bool] = True

    def __init__(self, alpha: float = 10.0, margin: float = 1.0, *, mode: str = "one_vs_all",
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("alpha", alpha, strict=False)
        check_positive("margin", margin, strict=False)
        if mode not in ("one_vs_all", "top2"):
            raise ValueError(f"Expected mode 'one_vs_all' or 'top2', but got mode={mode!r}")
        self.alpha, self.margin, self.mode = alpha, margin, mode

    def forward(self, input: Tensor, target: Tensor, *, frequency: Tensor | None = None) -> Tensor:
        return F.multiclass_hkr_loss(input, target, alpha=self.alpha, margin=self.margin,
                                     mode=self.mode, reduction=self.reduction,
                                     frequency=frequency)


class TauCrossEntropyLoss(_Loss):
    r"""Cross-entropy at temperature τ: :math:`CE(\tau f(x), y)`.

    Small τ → large margins (certified robustness), large τ → clean accuracy.
    """

    def __init__(self, tau: float = 8.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("tau", tau)
        self.tau = tau

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.tau_cross_entropy_loss(input, target, tau=self.tau, reduction=self.reduction)


class OffsetCrossEntropyLoss(_Loss):
    r"""Prach & Lampert's offset cross-entropy, the true-class logit lowered by ξ:

    .. math::
        \ell_n = T \cdot CE\big((y_n - \xi\, s\, e_{t_n}) / T,\ t_n\big)

    with s = ``epsilon_scale`` (the ε-ramp protocol, module docstring). Defaults are Prach
    et al.'s: ξ = 2√2·36/255 (twice the logit margin that certifies ε = 36/255 at L = 1),
    T = 1/4. See :func:`onelip.functional.offset_cross_entropy_loss`.

    Shape: input (N, K), K ≥ 2; target (N,) in [0, K). Output: scalar, or (N,) if ``"none"``.
    """

    ramps_epsilon: ClassVar[bool] = True
    epsilon_scale: float

    def __init__(self, offset: float = 2 * math.sqrt(2) * 36 / 255, *,
                 temperature: float = 0.25, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("offset", offset, strict=False)
        check_positive("temperature", temperature)
        self.offset, self.temperature = offset, temperature
        self.epsilon_scale = 1.0

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.offset_cross_entropy_loss(input, target, offset=self.offset * self.epsilon_scale,
                                           temperature=self.temperature,
                                           reduction=self.reduction)


class EMMALoss(_Loss):
    r"""EMMA (Hu et al. 2023): :math:`\ell_n = T \cdot CE(y'_n / T, t_n)` on the worst-case
    logits :math:`y'_j = y_j - y_t + r_j\,\varepsilon s\,m_j`, :math:`m_j = \sqrt2 L`
    (:math:`j \ne t`), :math:`r_j = \operatorname{clip}(-(y_j - y_t)/(m_j \varepsilon s),
    0.01, 1)` detached, s = ``epsilon_scale`` (the ε-ramp protocol, module docstring).

    ``lipschitz`` is L, the certified bound of the whole network
    (:func:`onelip.certify.lipschitz_bound`).
    See :func:`onelip.functional.emma_loss`.

    Shape: input (N, K), K ≥ 2; target (N,) in [0, K). Output: scalar, or (N,) if ``"none"``.
    """

    ramps_epsilon: ClassVar[bool] = True
    epsilon_scale: float

    def __init__(self, epsilon: float = 36 / 255, *, lipschitz: float = 1.0,
                 temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("epsilon", epsilon, strict=False)
        check_positive("lipschitz", lipschitz)
        check_positive("temperature", temperature)
        self.epsilon, self.lipschitz, self.temperature = epsilon, lipschitz, temperature
        self.epsilon_scale = 1.0

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.emma_loss(input, target, epsilon=self.epsilon * self.epsilon_scale,
                           lipschitz=self.lipschitz, temperature=self.temperature,
                           reduction=self.reduction)


class LogitAnnealingLoss(_Loss):
    r"""Logit Annealing (Lai et al. 2025), a focal offset cross-entropy on EMMA's logits z:

    .. math::
        CE_n = CE\big((z_n - \xi e_{t_n}) / T,\ t_n\big), \qquad
        \ell_n = T\,(1 - e^{-CE_n})^{\gamma}\,CE_n,

    z the :class:`EMMALoss` logits at radius ε·s, s = ``epsilon_scale`` (the ε-ramp protocol,
    module docstring; ξ is not scaled), or z = y with ``emma=False``. Defaults are the
    reference's CIFAR-10 ones (γ = 5, T = 0.75, ξ = 2). See
    :func:`onelip.functional.logit_annealing_loss`.

    Shape: input (N, K), K ≥ 2; target (N,) in [0, K). Output: scalar, or (N,) if ``"none"``.
    """

    ramps_epsilon: ClassVar[bool] = True
    epsilon_scale: float

    def __init__(self, epsilon: float = 36 / 255, *, offset: float = 2.0,
                 temperature: float = 0.75, gamma: float = 5.0, lipschitz: float = 1.0,
                 emma: bool = True, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        check_positive("epsilon", epsilon, strict=False)
        check_positive("offset", offset, strict=False)
        check_positive("temperature", temperature)
        check_positive("gamma", gamma, strict=False)
        check_positive("lipschitz", lipschitz)
        self.epsilon, self.offset, self.temperature = epsilon, offset, temperature
        self.gamma, self.lipschitz, self.emma = gamma, lipschitz, bool(emma)
        self.epsilon_scale = 1.0

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.logit_annealing_loss(input, target, epsilon=self.epsilon * self.epsilon_scale,
                                      offset=self.offset, temperature=self.temperature,
                                      gamma=self.gamma, lipschitz=self.lipschitz,
                                      emma=self.emma, reduction=self.reduction)


_MARGIN_LOSSES = ("offset-ce", "emma", "la")


def build_loss(name: str, *, num_classes: int, alpha: float = 10.0, margin: float = 1.0,
               tau: float = 8.0, hinge_mode: str = "one_vs_all", offset: float | None = None,
               temperature: float | None = None, epsilon: float = 36 / 255,
               gamma: float = 5.0, lipschitz: float = 1.0) -> _Loss:
    """The loss named ``name`` for a problem with ``num_classes``.

    Names: kr, hinge, hkr, ce (τ-CE), and the margin-aware offset-ce
    (:class:`OffsetCrossEntropyLoss`), emma (:class:`EMMALoss`) and la
    (:class:`LogitAnnealingLoss`), which need K ≥ 2 outputs. ``hinge_mode`` is the multiclass
    hinge's ``mode`` (the same default). ``temperature=None`` takes each margin loss's own
    default (offset-ce 1/4, emma 1, la 0.75). ``offset=None`` gives offset-ce Prach's offset
    scaled by the network's bound, 2·√2·``lipschitz``·``epsilon``, and la ξ = 2.
    ``epsilon`` is the EMMA radius of emma and la, ``lipschitz`` the network's certified bound
    (:func:`onelip.certify.lipschitz_bound`), ``gamma`` la's focal exponent.
    """
    binary = num_classes == 1  # one output: a binary classifier sign(f)
    names = ("kr", "hinge", "hkr", "ce", *_MARGIN_LOSSES)
    if name not in names:
        raise ValueError(f"Unknown loss {name!r}; expected one of {', '.join(names)}")
    if name in _MARGIN_LOSSES:
        if binary:
            raise ValueError(f"The {name} loss needs K >= 2 outputs; for one output use kr, "
                             "hinge or hkr")
        check_positive("epsilon", epsilon, strict=False)
        check_positive("lipschitz", lipschitz)
        temp = {} if temperature is None else {"temperature": temperature}
        if name == "offset-ce":
            xi = 2 * math.sqrt(2) * lipschitz * epsilon if offset is None else offset
            return OffsetCrossEntropyLoss(xi, **temp)
        if name == "emma":
            return EMMALoss(epsilon, lipschitz=lipschitz, **temp)
        return LogitAnnealingLoss(epsilon, offset=2.0 if offset is None else offset,
                                  gamma=gamma, lipschitz=lipschitz, **temp)
    if binary:
        if name == "ce":
            raise ValueError("The τ-cross-entropy loss needs K >= 2 outputs")
        return {"kr": lambda: KRLoss(), "hinge": lambda: HingeLoss(margin),
                "hkr": lambda: HKRLoss(alpha, margin)}[name]()
    return {"kr": lambda: MulticlassKRLoss(),
            "hinge": lambda: MulticlassHingeLoss(margin, mode=hinge_mode),
            "hkr": lambda: MulticlassHKRLoss(alpha, margin, mode=hinge_mode),
            "ce": lambda: TauCrossEntropyLoss(tau)}[name]()
