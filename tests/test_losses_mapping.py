# SPDX-License-Identifier: MIT
"""The loss mappings of docs/losses.md, checked against values computed with deel-torchlip.

deel-torchlip is not installed in the test environment: the reference values below were
computed with deel-torchlip 1.0.5 (torch 2.13.0+cpu, the benchmarks' peer environment
``benchmarks/.peers-venv``) on deel-torchlip's own test tensors (``y_pred2``/``y_true2`` and
``y_pred3``/``y_true3`` of its ``tests/test_losses.py``: float32 values, converted exactly to
float64), with one-hot targets and the loss evaluated in float64::

    from deel.torchlip.modules.loss import HKRMulticlassLoss, KRMulticlassLoss
    HKRMulticlassLoss(alpha=5.0, min_margin=2.0)(pred2.double(), one_hot(y2, 3).double())
    HKRMulticlassLoss(alpha=2.5, min_margin=1.0, reduction="none")(pred3.double(), ...)
    HKRMulticlassLoss(alpha=0.3, min_margin=0.7, reduction="none")(pred3.double(), ...)
    KRMulticlassLoss(reduction="none")(pred3.double(), ...)

They also agree with the values deel-torchlip's tests state: 1071/200 · 1/(1+5) (its
``scaleAlpha``) for the first, (−779, −656, 1395, −625, −1609, 4557, −1284, 825)/900 · 1/(1+2.5)
for the second, (326, 314, 120, 250, 496, −258, 396, 450)/225 for the KR one.
deel-torchlip maps an ``alpha`` > 1 to α/(1+α) before use: α_t = 5/6 and 5/7 above.
"""

from __future__ import annotations

import pytest
import torch

from onelip.losses import MulticlassHKRLoss, MulticlassKRLoss

# deel-torchlip's test tensors (float32 in its tests; the float32 values, exactly in float64)
PRED2 = torch.tensor([[2, 0.2, -0.5], [-1, -1.2, 0.3], [0.8, 2, 0], [0, 1, -0.5],
                      [2.4, -0.4, -1.1], [-0.1, -1.7, 0.6]], dtype=torch.float32).double()
Y2 = torch.tensor([0, 0, 0, 1, 1, 2])
PRED3 = torch.tensor([[1.5, 0.2, -0.5], [1, -1.2, 0.3], [0.8, 2, -2], [0, 1, -0.5],
                      [-0.8, 2, 0], [2.4, -0.4, -1.1], [-0.1, -1.7, 0.6], [1.2, 1.3, 2.5]],
                     dtype=torch.float32).double()
Y3 = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])

# (deel-torchlip alpha as passed, min_margin, reduction, pred, labels, deel-torchlip's value)
HKR_REFERENCE = {
    "test2-mean": (5.0, 2.0, "mean", PRED2, Y2, torch.tensor(0.8925000012196876,
                                                             dtype=torch.float64)),
    "test2-none": (5.0, 2.0, "none", PRED2, Y2, torch.tensor(
        [0.23333333440952844, 1.503333333465788, 1.299999992052714, 0.21666666666666673,
         1.9822222620248793, 0.11944441869854927], dtype=torch.float64)),
    "test3-none": (2.5, 1.0, "none", PRED3, Y3, torch.tensor(
        [-0.24730158613787753, -0.208253971167973, 0.4428571398296054, -0.19841269841269835,
         -0.5107936526101732, 1.4466667052299258, -0.40761906454960506, 0.261904761904762],
        dtype=torch.float64)),
    "test3-alpha0.3": (0.3, 0.7, "none", PRED3, Y3, torch.tensor(
        [-0.9592222208115789, -0.9118889017899828, -0.13833334075080012, -0.7427777777777775,
         -1.508111115561591, 1.2276667092906102, -1.2070000407596428, -1.0799999999999998],
        dtype=torch.float64)),
}
KR_REFERENCE = torch.tensor(  # deel-torchlip KRMulticlassLoss(reduction="none") on test 3
    [1.4488888872994317, 1.3955555756886797, 0.5333333439297144, 1.111111111111111,
     2.204444450802273, -1.146666712231106, 1.7600000580151878, 2.0], dtype=torch.float64)


def _alpha_t(alpha: float) -> float:
    """deel-torchlip's HKRMulticlassLoss: an alpha outside [0, 1] becomes α/(1+α)."""
    return alpha if 0.0 <= alpha <= 1.0 else alpha / (alpha + 1.0)


def _mapped(alpha: float, min_margin: float, reduction: str, k: int) -> tuple[float, object]:
    """docs/losses.md: (1−α_t) · MulticlassHKRLoss(alpha=α_t/(1−α_t)·(K−1)/K, margin=m′/2)."""
    a = _alpha_t(alpha)
    return 1 - a, MulticlassHKRLoss(alpha=a / (1 - a) * (k - 1) / k, margin=min_margin / 2,
                                    reduction=reduction)


@pytest.mark.parametrize("case", list(HKR_REFERENCE))
def test_multiclass_hkr_mapping_matches_deel_torchlip(case):
    alpha, m, reduction, pred, y, ref = HKR_REFERENCE[case]
    scale, loss = _mapped(alpha, m, reduction, pred.shape[1])
    ours = scale * loss(pred, y)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-12), (ours, ref)


def test_the_binary_row_does_not_map_the_multiclass_loss():
    """Applying the binary HKR row (no (K−1)/K factor) to the multiclass loss is off by 0.48
    on deel-torchlip's own test tensor: why docs/losses.md has a multiclass row."""
    alpha, m, reduction, pred, y, ref = HKR_REFERENCE["test2-mean"]
    a = _alpha_t(alpha)
    wrong = (1 - a) * MulticlassHKRLoss(alpha=a / (1 - a), margin=m / 2)(pred, y)
    assert float(wrong - ref) == pytest.approx(0.4815, abs=1e-3)


def test_multiclass_kr_is_minus_deel_torchlip_kr():
    ours = MulticlassKRLoss(reduction="none")(PRED3, Y3)
    assert torch.allclose(-ours, KR_REFERENCE, rtol=1e-12, atol=1e-12), (ours, KR_REFERENCE)


def test_reference_values_match_deel_torchlips_own_expected_values():
    """Provenance: the hard-coded values equal the rationals deel-torchlip's tests state."""
    assert float(HKR_REFERENCE["test2-mean"][-1]) == pytest.approx(1071 / 200 / 6, abs=1e-7)
    stated = torch.tensor([-779, -656, 1395, -625, -1609, 4557, -1284, 825],
                          dtype=torch.float64) / 900 / 3.5
    assert torch.allclose(HKR_REFERENCE["test3-none"][-1], stated, atol=1e-7)
    stated_kr = torch.tensor([326, 314, 120, 250, 496, -258, 396, 450],
                             dtype=torch.float64) / 225
    assert torch.allclose(KR_REFERENCE, stated_kr, atol=1e-7)
