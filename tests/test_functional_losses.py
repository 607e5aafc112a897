# SPDX-License-Identifier: MIT
"""Losses: hand-computed values, reduction laws, label-encoding invariance, gradients, errors.

onelip's convention (src/onelip/functional.py): KR minimised, E[f|y=-1] - E[f|y=+1]; hinge
with the full margin; HKR = KR + α·hinge; τ-CE = CE(τ f, y).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import onelip.functional as OF
from onelip import losses as L

TOL = 1e-6  # float32 sums of a handful of O(1) numbers

BINARY = {
    "kr": lambda f, y, r: OF.kr_loss(f, y, reduction=r),
    "hinge": lambda f, y, r: OF.hinge_loss(f, y, margin=0.7, reduction=r),
    "hkr": lambda f, y, r: OF.hkr_loss(f, y, alpha=3.0, margin=0.7, reduction=r),
}
MULTICLASS = {
    "mkr": lambda f, y, r: OF.multiclass_kr_loss(f, y, reduction=r),
    "mhinge_ova": lambda f, y, r: OF.multiclass_hinge_loss(f, y, margin=0.7, reduction=r),
    "mhinge_top2": lambda f, y, r: OF.multiclass_hinge_loss(f, y, margin=0.7, mode="top2",
                                                            reduction=r),
    "mhkr_ova": lambda f, y, r: OF.multiclass_hkr_loss(f, y, alpha=3.0, margin=0.7, reduction=r),
    "mhkr_top2": lambda f, y, r: OF.multiclass_hkr_loss(f, y, alpha=3.0, margin=0.7,
                                                        mode="top2", reduction=r),
    "tau_ce": lambda f, y, r: OF.tau_cross_entropy_loss(f, y, tau=4.0, reduction=r),
}


def _binary_batch(n: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, generator=g)
    y = torch.arange(n) % 2  # both classes present
    return f, y[torch.randperm(n, generator=g)]


def _multiclass_batch(n: int = 12, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, k, generator=g)
    y = torch.arange(n) % k  # every class present
    return f, y[torch.randperm(n, generator=g)]


# ==== hand-computed values ==================================================================


def test_kr_hand_values():
    f = torch.tensor([1.0, 2.0, -1.0, 3.0])
    y = torch.tensor([1, 0, 0, 1])
    # E[f|y=-1] = (2 - 1)/2 = 0.5, E[f|y=+1] = (1 + 3)/2 = 2
    assert float(OF.kr_loss(f, y)) == pytest.approx(0.5 - 2.0, abs=TOL)
    # per sample -y f / p(y), p = 1/2
    assert torch.allclose(OF.kr_loss(f, y, reduction="none"), torch.tensor([-2.0, 4, -2, -6]))
    # unbalanced: E[f|-1] = 3, E[f|+1] = 1.5
    f2, y2 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 1, 0])
    assert float(OF.kr_loss(f2, y2)) == pytest.approx(1.5, abs=TOL)
    # given global frequencies (p(-1), p(+1)) replace the batch ones
    freq = torch.tensor([0.25, 0.75])
    want = torch.tensor([-1 / 0.75, -2 / 0.75, 3 / 0.25])
    assert torch.allclose(OF.kr_loss(f2, y2, reduction="none", frequency=freq), want)


@pytest.mark.parametrize("n_neg,n_pos", [(1, 9), (5, 5), (9, 1), (3, 17)])
def test_kr_mean_is_difference_of_conditional_means(n_neg, n_pos):
    f = torch.randn(n_neg + n_pos, dtype=torch.float64)
    y = torch.tensor([-1] * n_neg + [1] * n_pos)
    want = f[y < 0].mean() - f[y > 0].mean()
    assert float(OF.kr_loss(f, y)) == pytest.approx(float(want), abs=1e-12)


def test_kr_single_class_batch_is_finite():
    f = torch.tensor([0.5, 1.5], requires_grad=True)
    out = OF.kr_loss(f, torch.tensor([1, 1]))
    assert float(out.detach()) == pytest.approx(-1.0)  # -E[f|+1]
    out.backward()
    assert torch.isfinite(f.grad).all()


def test_kr_minimum_is_minus_wasserstein_in_1d():
    """Over 1-Lipschitz f, min KR = -W1(P+, P-). In 1-D with P+ left of P- the optimal
    potential is f(x) = -x, and W1 = mean(P-) - mean(P+)."""
    pos = torch.tensor([0.0, 0.5, 1.0])
    neg = torch.tensor([3.0, 4.0, 5.0, 6.0])
    x = torch.cat([pos, neg])
    y = torch.tensor([1] * 3 + [0] * 4)
    w1 = float(neg.mean() - pos.mean())
    assert float(OF.kr_loss(-x, y)) == pytest.approx(-w1)
    # any other 1-Lipschitz potential does no better
    for f in (-0.5 * x, torch.clamp(-x, min=-2.0), -x + 7.0, torch.sin(x)):
        assert float(OF.kr_loss(f, y)) >= -w1 - TOL


def test_hinge_hand_values():
    f = torch.tensor([0.5, -2.0, 2.0, 1.5])
    y = torch.tensor([1, 1, -1, 1])
    want = torch.tensor([0.5, 3.0, 3.0, 0.0])  # relu(1 - y f), the full margin
    assert torch.allclose(OF.hinge_loss(f, y, reduction="none"), want)
    assert float(OF.hinge_loss(f, y, margin=0.0)) == pytest.approx((0 + 2 + 2 + 0) / 4)
    assert float(OF.hinge_loss(f, y, margin=2.0, reduction="sum")) == pytest.approx(
        1.5 + 4 + 4 + 0.5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 10.0])
def test_hkr_is_kr_plus_alpha_hinge(alpha):
    f, y = _binary_batch()
    for r in ("none", "mean", "sum"):
        got = OF.hkr_loss(f, y, alpha=alpha, margin=0.3, reduction=r)
        want = OF.kr_loss(f, y, reduction=r) + alpha * OF.hinge_loss(f, y, margin=0.3,
                                                                      reduction=r)
        assert torch.allclose(got, want, atol=1e-5), r


def test_hkr_maps_to_deel_torchlip():
    """deel-torchlip ≥ 1.0: α_t·relu(m'/2 − y f) − (1−α_t)·(E+[f] − E−[f]) equals
    (1−α_t)·HKR(α=α_t/(1−α_t), m=m'/2) (the mapping stated in onelip.losses)."""
    f, y = _binary_batch(n=12)
    s = 2.0 * y - 1
    alpha_t, m_prime = 0.9, 1.2
    kr_torchlip = f[s > 0].mean() - f[s < 0].mean()
    torchlip = alpha_t * TF.relu(m_prime / 2 - s * f).mean() - (1 - alpha_t) * kr_torchlip
    ours = (1 - alpha_t) * OF.hkr_loss(f, y, alpha=alpha_t / (1 - alpha_t), margin=m_prime / 2)
    assert float(ours) == pytest.approx(float(torchlip), abs=1e-5)


def test_multiclass_kr_is_average_one_vs_all_kr():
    f, y = _multiclass_batch(n=20, k=4)
    k = f.shape[1]
    want = sum(f[y != c, c].mean() - f[y == c, c].mean() for c in range(k)) / k
    assert float(OF.multiclass_kr_loss(f, y)) == pytest.approx(float(want), abs=1e-5)
    freq = torch.tensor([0.1, 0.2, 0.3, 0.4])
    per = OF.multiclass_kr_loss(f, y, reduction="none", frequency=freq)
    onehot = TF.one_hot(y, k).float()
    want_per = (-onehot * f / freq + (1 - onehot) * f / (1 - freq)).sum(1) / k
    assert torch.allclose(per, want_per, atol=1e-5)


def test_multiclass_hinge_hand_values():
    f = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 0.2]])
    y = torch.tensor([0, 0])
    # one_vs_all: relu(m - f_y) + mean_{j≠y} relu(m + f_j), m = 1
    ova = OF.multiclass_hinge_loss(f, y, reduction="none")
    assert torch.allclose(ova, torch.tensor([0.0 + (0.0 + 1.5) / 2, 1.0 + (2.0 + 1.2) / 2]))
    # top2: relu(m - (f_y - max_{j≠y} f_j))
    top2 = OF.multiclass_hinge_loss(f, y, mode="top2", reduction="none")
    assert torch.allclose(top2, torch.tensor([0.0, 2.0]))
    top2_m3 = OF.multiclass_hinge_loss(f, y, margin=3.0, mode="top2", reduction="none")
    assert torch.allclose(top2_m3, torch.tensor([1.5, 4.0]))


@pytest.mark.parametrize("mode", ["one_vs_all", "top2"])
@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_multiclass_hkr_is_kr_plus_alpha_hinge(mode, alpha):
    f, y = _multiclass_batch()
    for r in ("none", "mean", "sum"):
        got = OF.multiclass_hkr_loss(f, y, alpha=alpha, margin=0.4, mode=mode, reduction=r)
        want = (OF.multiclass_kr_loss(f, y, reduction=r)
                + alpha * OF.multiclass_hinge_loss(f, y, margin=0.4, mode=mode, reduction=r))
        assert torch.allclose(got, want, atol=1e-5), r


@pytest.mark.parametrize("tau", [0.1, 1.0, 8.0, 64.0])
def test_tau_cross_entropy_is_ce_of_tau_f(tau):
    f, y = _multiclass_batch()
    for r in ("none", "mean", "sum"):
        got = OF.tau_cross_entropy_loss(f, y, tau=tau, reduction=r)
        assert torch.allclose(got, TF.cross_entropy(tau * f, y, reduction=r), atol=1e-5)
    assert torch.allclose(L.TauCrossEntropyLoss(tau)(f, y), TF.cross_entropy(tau * f, y))


def test_hinge_zero_iff_margin_reached():
    """top2 hinge is 0 exactly when f_y − max_{j≠y} f_j ≥ m (certified radius ≥ m/√2)."""
    f = torch.tensor([[3.0, 2.0, 0.0], [3.0, 2.5, 0.0]])
    y = torch.tensor([0, 0])
    out = OF.multiclass_hinge_loss(f, y, margin=1.0, mode="top2", reduction="none")
    assert out[0] == 0 and out[1] > 0


# ==== reduction laws ========================================================================

_ALL = {**{k: ("binary", v) for k, v in BINARY.items()},
        **{k: ("multi", v) for k, v in MULTICLASS.items()}}


@pytest.mark.parametrize("name", list(_ALL))
def test_reduction_laws(name):
    kind, fn = _ALL[name]
    f, y = _binary_batch(n=9) if kind == "binary" else _multiclass_batch(n=9, k=3)
    none = fn(f, y, "none")
    assert none.shape == (9,)
    assert fn(f, y, "mean").shape == () and fn(f, y, "sum").shape == ()
    assert float(fn(f, y, "sum")) == pytest.approx(9 * float(fn(f, y, "mean")), rel=1e-5,
                                                    abs=1e-5)
    assert float(fn(f, y, "mean")) == pytest.approx(float(none.mean()), rel=1e-6, abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        fn(f, y, "avg")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 40), k=st.integers(2, 7), seed=st.integers(0, 10_000),
       name=st.sampled_from(sorted(_ALL)))
def test_reduction_laws_sweep(n, k, seed, name):
    kind, fn = _ALL[name]
    g = torch.Generator().manual_seed(seed)
    if kind == "binary":
        f = torch.randn(n, generator=g, dtype=torch.float64)
        y = torch.randint(0, 2, (n,), generator=g)
    else:
        f = torch.randn(n, k, generator=g, dtype=torch.float64)
        y = torch.randint(0, k, (n,), generator=g)
    none = fn(f, y, "none")
    assert none.shape == (n,)
    assert torch.isfinite(none).all()
    assert float(fn(f, y, "sum")) == pytest.approx(n * float(fn(f, y, "mean")), rel=1e-9,
                                                    abs=1e-9)


@pytest.mark.parametrize("cls,kwargs,kind", [
    (L.KRLoss, {}, "binary"), (L.HingeLoss, {"margin": 0.7}, "binary"),
    (L.HKRLoss, {"alpha": 3.0, "margin": 0.7}, "binary"),
    (L.MulticlassKRLoss, {}, "multi"),
    (L.MulticlassHingeLoss, {"margin": 0.7}, "multi"),
    (L.MulticlassHingeLoss, {"margin": 0.7, "mode": "top2"}, "multi"),
    (L.MulticlassHKRLoss, {"alpha": 3.0, "margin": 0.7}, "multi"),
    (L.MulticlassHKRLoss, {"alpha": 3.0, "margin": 0.7, "mode": "top2"}, "multi"),
    (L.TauCrossEntropyLoss, {"tau": 4.0}, "multi"),
])
def test_modules_equal_functional(cls, kwargs, kind):
    f, y = _binary_batch() if kind == "binary" else _multiclass_batch()
    fn = {
        L.KRLoss: OF.kr_loss, L.HingeLoss: OF.hinge_loss, L.HKRLoss: OF.hkr_loss,
        L.MulticlassKRLoss: OF.multiclass_kr_loss,
        L.MulticlassHingeLoss: OF.multiclass_hinge_loss,
        L.MulticlassHKRLoss: OF.multiclass_hkr_loss,
        L.TauCrossEntropyLoss: OF.tau_cross_entropy_loss,
    }[cls]
    for r in ("mean", "sum", "none"):
        assert torch.equal(cls(**kwargs, reduction=r)(f, y), fn(f, y, **kwargs, reduction=r))
    with pytest.raises(ValueError, match="reduction"):
        cls(**kwargs, reduction="batchmean")


# ==== label encodings =======================================================================


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_label_encoding_invariance(name):
    fn = BINARY[name]
    f, y01 = _binary_batch(n=11)
    ref = fn(f, y01, "none")
    encodings = {
        "int64 {0,1}": y01,
        "int32 {0,1}": y01.int(),
        "float {0,1}": y01.float(),
        "bool": y01.bool(),
        "int {-1,+1}": 2 * y01 - 1,
        "float {-1,+1}": (2 * y01 - 1).double(),
        "(N,1)": y01[:, None],
    }
    for label, y in encodings.items():
        assert torch.allclose(fn(f, y, "none"), ref, atol=1e-6), label
    assert torch.allclose(fn(f[:, None], y01, "none"), ref, atol=1e-6), "scores (N, 1)"


def test_all_ones_batch_is_all_positive_in_both_encodings():
    f = torch.tensor([0.2, -0.3])
    y = torch.ones(2, dtype=torch.long)
    assert torch.equal(OF.hinge_loss(f, y, reduction="none"), torch.tensor([0.8, 1.3]))


@pytest.mark.parametrize("name", list(MULTICLASS))
def test_multiclass_label_dtype_invariance(name):
    fn = MULTICLASS[name]
    f, y = _multiclass_batch()
    ref = fn(f, y, "none")
    for yy in (y.int(), y.float(), y.double(), y[:, None]):
        assert torch.allclose(fn(f, yy, "none"), ref, atol=1e-6), yy.dtype


# ==== gradients =============================================================================


@pytest.mark.parametrize("name", list(_ALL))
def test_gradients_finite(name):
    kind, fn = _ALL[name]
    for seed in range(3):
        f, y = _binary_batch(seed=seed) if kind == "binary" else _multiclass_batch(seed=seed)
        f = (f * 100).requires_grad_(True)  # large scores: no overflow in CE/hinge
        fn(f, y, "mean").backward()
        assert torch.isfinite(f.grad).all(), name
        assert f.grad.abs().sum() > 0, name


def test_kr_gradient_is_the_class_weights():
    f = torch.zeros(4, requires_grad=True)
    y = torch.tensor([1, 0, 0, 0])
    OF.kr_loss(f, y).backward()
    # d/df of (mean f[neg] - mean f[pos]): +1/3 on negatives, -1 on the positive
    assert torch.allclose(f.grad, torch.tensor([-1.0, 1 / 3, 1 / 3, 1 / 3]))


# ==== errors ================================================================================


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_errors(name):
    fn = BINARY[name]
    f, y = _binary_batch(n=4)
    with pytest.raises(ValueError, match=r"binary scores of shape \(N,\) or \(N, 1\)"):
        fn(torch.randn(4, 2), y, "mean")
    with pytest.raises(ValueError, match="Expected 4 labels for 4 scores, but got 3"):
        fn(f, y[:3], "mean")
    with pytest.raises(ValueError, match=r"binary labels in \{0, 1\} or \{-1, \+1\}"):
        fn(f, torch.tensor([0, 1, 2, 1]), "mean")
    with pytest.raises(ValueError, match="binary labels"):
        fn(f, torch.tensor([-1, 0, 1, 1]), "mean")  # mixed encodings
    with pytest.raises(ValueError, match="binary labels"):
        fn(f, torch.tensor([0.5, 1.0, 0.0, 1.0]), "mean")


@pytest.mark.parametrize("name", list(MULTICLASS))
def test_multiclass_errors(name):
    fn = MULTICLASS[name]
    f, y = _multiclass_batch(n=4, k=3)
    with pytest.raises(IndexError, match=r"class labels in \[0, 3\), but got values in \[0, 3\]"):
        fn(f, torch.tensor([0, 1, 2, 3]), "mean")
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        fn(f, torch.tensor([0, -1, 2, 1]), "mean")
    with pytest.raises(ValueError, match="fractional"):
        fn(f, torch.tensor([0.0, 1.5, 2.0, 1.0]), "mean")
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        fn(torch.randn(4), y, "mean")
    with pytest.raises(ValueError, match="at least 2 classes"):
        fn(torch.randn(4, 1), torch.zeros(4, dtype=torch.long), "mean")
    with pytest.raises(ValueError, match="Expected 4 labels for 4 rows"):
        fn(f, y[:2], "mean")


def test_hyperparameter_errors():
    f, y = _binary_batch(n=4)
    fm, ym = _multiclass_batch(n=4, k=3)
    with pytest.raises(ValueError, match="margin to be non-negative, but got margin=-1"):
        OF.hinge_loss(f, y, margin=-1)
    with pytest.raises(ValueError, match="alpha to be non-negative"):
        OF.hkr_loss(f, y, alpha=-0.1)
    with pytest.raises(ValueError, match="tau to be positive, but got tau=0"):
        OF.tau_cross_entropy_loss(fm, ym, tau=0)
    with pytest.raises(ValueError, match="mode 'one_vs_all' or 'top2'"):
        OF.multiclass_hinge_loss(fm, ym, mode="top1")
    with pytest.raises(ValueError, match="mode"):
        L.MulticlassHingeLoss(mode="ova")
    with pytest.raises(ValueError, match="mode"):
        L.MulticlassHKRLoss(mode="ova")
    with pytest.raises(ValueError, match="margin"):
        L.HingeLoss(-1.0)
    with pytest.raises(ValueError, match="tau"):
        L.TauCrossEntropyLoss(-2.0)
    with pytest.raises(ValueError, match=r"frequency of shape \(3,\)"):
        OF.multiclass_kr_loss(fm, ym, frequency=torch.tensor([0.5, 0.5]))


def test_build_loss():
    assert isinstance(L.build_loss("hkr", num_classes=1), L.HKRLoss)
    assert isinstance(L.build_loss("hinge", num_classes=10), L.MulticlassHingeLoss)
    assert L.build_loss("hinge", num_classes=10).mode == "one_vs_all"
    assert L.build_loss("hinge", num_classes=10, hinge_mode="top2").mode == "top2"
    assert isinstance(L.build_loss("ce", num_classes=3, tau=2.0), L.TauCrossEntropyLoss)
    with pytest.raises(ValueError, match="needs K >= 2"):
        L.build_loss("ce", num_classes=1)
    with pytest.raises(ValueError, match="Unknown loss 'mse'; expected one of kr, hinge"):
        L.build_loss("mse", num_classes=3)


def test_losses_in_float64_stay_float64():
    f, y = _multiclass_batch()
    for name, fn in MULTICLASS.items():
        assert fn(f.double(), y, "mean").dtype == torch.float64, name
    fb, yb = _binary_batch()
    for name, fn in BINARY.items():
        assert fn(fb.double(), yb, "mean").dtype == torch.float64, name
    assert math.isfinite(float(OF.kr_loss(fb.double(), yb)))


def test_one_default_hinge_mode():
    """The multiclass hinge has one default mode, the paper's (one-vs-all with the full margin),
    wherever it can be chosen: the functional form, both loss classes, build_loss and
    ``onelip train --hinge-mode``."""
    import inspect

    from onelip.cli import build_parser
    from onelip.cli._common import LazyDefault

    mode = inspect.signature(L.MulticlassHingeLoss).parameters["mode"].default
    assert mode == "one_vs_all"
    defaults = {
        "multiclass_hinge_loss": inspect.signature(OF.multiclass_hinge_loss)
        .parameters["mode"].default,
        "multiclass_hkr_loss": inspect.signature(OF.multiclass_hkr_loss)
        .parameters["mode"].default,
        "MulticlassHKRLoss": inspect.signature(L.MulticlassHKRLoss).parameters["mode"].default,
        "build_loss": inspect.signature(L.build_loss).parameters["hinge_mode"].default,
        "onelip train --hinge-mode": _resolved(build_parser().parse_args(
            ["train", "--data", "two-moons"]), LazyDefault).hinge_mode,
    }
    assert all(d == mode for d in defaults.values()), f"{mode=} but {defaults}"


def _resolved(args, lazy):
    lazy.resolve(args)  # the defaults the command reads when it runs
    return args
