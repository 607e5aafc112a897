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

Binary losses take scores of shape (N,) or (N, 1) and labels all in {0, 1} or all in
{−1, +1} (int, float or bool; 1 is the positive class), the rule :mod:`onelip.certify` also
applies; other values (2, 0.5, a mix of 0 and −1) are a ValueError. Multiclass losses take
scores (N, K) and integer labels in [0, K).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from onelip import functional as F
from onelip._validation import check_positive, check_reduction

__all__ = [
    "HKRLoss",
    "HingeLoss",
    "KRLoss",
    "MulticlassHKRLoss",
    "MulticlassHingeLoss",
    "MulticlassKRLoss",
    "TauCrossEntropyLoss",
]


class _Loss(nn.Module):
    reduction: str
    # True where forward(input, target, *, frequency=None) takes the global class frequencies
    takes_frequency: ClassVar[bool] = False

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


def build_loss(name: str, *, num_classes: int, alpha: float = 10.0, margin: float = 1.0,
               tau: float = 8.0, hinge_mode: str = "one_vs_all") -> _Loss:
    """The loss named ``name`` (kr, hinge, hkr, ce) for a problem with ``num_classes``;
    ``hinge_mode`` as the multiclass hinge's ``mode`` (the same default)."""
    binary = num_classes == 1  # one output: a binary classifier sign(f)
    names = ("kr", "hinge", "hkr", "ce")
    if name not in names:
        raise ValueError(f"Unknown loss {name!r}; expected one of {', '.join(names)}")
    if binary:
        if name == "ce":
            raise ValueError("The τ-cross-entropy loss needs K >= 2 outputs")
        return {"kr": lambda: KRLoss(), "hinge": lambda: HingeLoss(margin),
                "hkr": lambda: HKRLoss(alpha, margin)}[name]()
    return {"kr": lambda: MulticlassKRLoss(),
            "hinge": lambda: MulticlassHingeLoss(margin, mode=hinge_mode),
            "hkr": lambda: MulticlassHKRLoss(alpha, margin, mode=hinge_mode),
            "ce": lambda: TauCrossEntropyLoss(tau)}[name]()
