# SPDX-License-Identifier: MIT
"""The records' margin-aware losses: offset cross-entropy, EMMA, Logit Annealing.

Closed forms on hand-built logits (math.log / math.exp), EMMA's detached radius, the identities
between the three, invariance to a constant added to every logit, finite gradients as p_t → 1,
the reductions, the modules against their functional twins, the ε-ramp protocol
(``ramps_epsilon``, ``epsilon_scale``), build_loss and the argument errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF

import onelip.functional as OF
from onelip import losses as L
from onelip.functional.losses import _emma_logits

R2 = math.sqrt(2)
PRACH = 2 * R2 * 36 / 255

# name -> functional with non-default hyper-parameters (for the shared laws below)
MARGIN = {
    "offset_ce": lambda y, t, r: OF.offset_cross_entropy_loss(y, t, offset=0.3, temperature=0.5,
                                                              reduction=r),
    "emma": lambda y, t, r: OF.emma_loss(y, t, epsilon=0.4, lipschitz=1.7, temperature=0.8,
                                         reduction=r),
    "la": lambda y, t, r: OF.logit_annealing_loss(y, t, epsilon=0.4, offset=1.1,
                                                  temperature=0.6, gamma=2.0, lipschitz=1.7,
                                                  reduction=r),
    "la_no_emma": lambda y, t, r: OF.logit_annealing_loss(y, t, offset=1.1, temperature=0.6,
                                                          gamma=2.0, emma=False, reduction=r),
}


def _batch(n: int = 12, k: int = 4, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = 2 * torch.randn(n, k, generator=g, dtype=dtype)
    t = torch.arange(n) % k
    return y, t[torch.randperm(n, generator=g)]


def _ce(z: list[float], t: int) -> float:
    """CE(z, t) by hand: log Σ_j exp z_j − z_t."""
    return math.log(sum(math.exp(v) for v in z)) - z[t]


# Two hand-built 3-class samples, class 0 true, ε = 1.5, L = 1 (m = √2, m·ε = 1.5·√2):
#   y = (2, 0.5, −1):  shifted (0, −1.5, −3); r_1 = 1.5/(1.5√2) = 1/√2 (inside the clip),
#                      so y′_1 = −1.5 + 1.5 = 0; r_2 = 3/(1.5√2) > 1 → 1, y′_2 = −3 + 1.5√2.
#   y = (0, 1, −0.5):  shifted (0, 1, −0.5); r_1 < 0 → 0.01, y′_1 = 1 + 0.01·1.5√2;
#                      r_2 = 0.5/(1.5√2) inside, y′_2 = 0.
HAND_Y = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, -0.5]], dtype=torch.float64)
HAND_T = torch.tensor([0, 0])
HAND_EPS = 1.5
HAND_EMMA = [[0.0, 0.0, -3 + 1.5 * R2], [0.0, 1 + 0.01 * 1.5 * R2, 0.0]]


# ==== closed forms ==========================================================================


def test_emma_logits_by_hand():
    got = _emma_logits(HAND_Y, HAND_T, epsilon=HAND_EPS, lipschitz=1.0)
    assert torch.allclose(got, torch.tensor(HAND_EMMA, dtype=torch.float64), atol=1e-12)
    # L scales every m_j (m·ε = 3√2 at L = 2): both radii of the 1st sample are inside the
    # clip now (r_1 = 1.5/(3√2), r_2 = 3/(3√2)), so y′ = 0 there; the 2nd's y′_1 = 1 + 0.01·3√2
    got2 = _emma_logits(HAND_Y, HAND_T, epsilon=HAND_EPS, lipschitz=2.0)
    assert torch.allclose(got2[0], torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64),
                          atol=1e-12)
    assert float(got2[1, 1]) == pytest.approx(1 + 0.01 * 3 * R2, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("eps,lip", [(0.1, 1.0), (36 / 255, 4.1), (1.0, 0.5)])
def test_emma_logits_follow_the_reference_formula(seed, eps, lip):
    """y′_j = y_j + clip(r_j, 0.01, 1)·ε·m_j with r_j = −y_j/(m_j ε) on y shifted by y_t,
    m_j = √2·L for j ≠ t; the true class is not shifted (y′_t = 0)."""
    y, t = _batch(n=16, k=5, seed=seed)
    got = _emma_logits(y, t, epsilon=eps, lipschitz=lip)
    m = R2 * lip
    for n in range(y.shape[0]):
        ti = int(t[n])
        for j in range(y.shape[1]):
            s = float(y[n, j] - y[n, ti])
            want = 0.0 if j == ti else s + min(max(-s / (m * eps), 0.01), 1.0) * eps * m
            assert float(got[n, j]) == pytest.approx(want, abs=1e-12), (n, j)


def test_emma_loss_by_hand():
    got = OF.emma_loss(HAND_Y, HAND_T, epsilon=HAND_EPS, reduction="none")
    want = [_ce(z, 0) for z in HAND_EMMA]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    # at temperature T: T·CE(y′/T)
    got_t = OF.emma_loss(HAND_Y, HAND_T, epsilon=HAND_EPS, temperature=0.3, reduction="none")
    want_t = [0.3 * _ce([v / 0.3 for v in z], 0) for z in HAND_EMMA]
    assert got_t.tolist() == pytest.approx(want_t, abs=1e-12)


def test_offset_cross_entropy_by_hand():
    xi, temp = 0.4, 0.25
    got = OF.offset_cross_entropy_loss(HAND_Y, HAND_T, offset=xi, temperature=temp,
                                       reduction="none")
    want = [temp * _ce([(z[0] - xi) / temp, z[1] / temp, z[2] / temp], 0)
            for z in HAND_Y.tolist()]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    # the default offset is Prach et al.'s 2√2·36/255 = 0.39931, T = 1/4
    assert PRACH == pytest.approx(0.399307, abs=1e-6)
    assert torch.allclose(OF.offset_cross_entropy_loss(HAND_Y, HAND_T, reduction="none"),
                          OF.offset_cross_entropy_loss(HAND_Y, HAND_T, offset=PRACH,
                                                       temperature=0.25, reduction="none"))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 5.0])
def test_logit_annealing_by_hand(gamma):
    xi, temp = 2.0, 0.75
    got = OF.logit_annealing_loss(HAND_Y, HAND_T, epsilon=HAND_EPS, offset=xi, temperature=temp,
                                  gamma=gamma, reduction="none")
    want = []
    for z in HAND_EMMA:
        ce = _ce([(z[0] - xi) / temp, z[1] / temp, z[2] / temp], 0)
        want.append(temp * (1 - math.exp(-ce)) ** gamma * ce)
    assert got.tolist() == pytest.approx(want, rel=1e-12)
    # without EMMA the offset goes on the raw logits
    got_raw = OF.logit_annealing_loss(HAND_Y, HAND_T, offset=xi, temperature=temp, gamma=gamma,
                                      emma=False, reduction="none")
    want_raw = []
    for z in HAND_Y.tolist():
        ce = _ce([(z[0] - xi) / temp, z[1] / temp, z[2] / temp], 0)
        want_raw.append(temp * (1 - math.exp(-ce)) ** gamma * ce)
    assert got_raw.tolist() == pytest.approx(want_raw, rel=1e-12)


def test_logit_annealing_keeps_precision_as_pt_goes_to_one():
    """1 − p_t is −expm1(−CE): in float32 with CE between 1e-6 and 1e-3, 1 − exp(−CE) is off
    by up to 1.6e-4 (relative) on these rows; −expm1 stays within float32 rounding."""
    d = torch.tensor([6.0, 7.0, 8.0, 9.0, 10.0])
    y = torch.stack([d, torch.zeros(5), torch.zeros(5)], 1)  # float32
    t = torch.zeros(5, dtype=torch.long)
    got = OF.logit_annealing_loss(y, t, offset=0.0, temperature=0.75, gamma=1.0, emma=False,
                                  reduction="none")
    ce = TF.cross_entropy(y / 0.75, t, reduction="none")  # the CE the loss sees
    assert (ce > 1e-6).all() and (ce < 1e-3).all()
    for g, c in zip(got.tolist(), ce.tolist(), strict=True):
        assert g == pytest.approx(0.75 * -math.expm1(-c) * c, rel=2e-6)


# ==== identities ============================================================================


@pytest.mark.parametrize("temp", [0.25, 0.75, 2.0])
@pytest.mark.parametrize("xi", [0.0, 0.5, 2.0])
def test_la_without_emma_and_focus_is_the_offset_cross_entropy(temp, xi):
    y, t = _batch()
    for r in ("none", "mean", "sum"):
        la = OF.logit_annealing_loss(y, t, offset=xi, temperature=temp, gamma=0.0, emma=False,
                                     reduction=r)
        oce = OF.offset_cross_entropy_loss(y, t, offset=xi, temperature=temp, reduction=r)
        assert torch.allclose(la, oce, rtol=1e-12, atol=1e-14), r
    # and γ > 0 makes a difference
    assert not torch.allclose(
        OF.logit_annealing_loss(y, t, offset=xi, temperature=temp, gamma=2.0, emma=False),
        OF.offset_cross_entropy_loss(y, t, offset=xi, temperature=temp))


def test_la_with_emma_no_offset_no_focus_is_emma():
    y, t = _batch(seed=3)
    la = OF.logit_annealing_loss(y, t, epsilon=0.3, offset=0.0, temperature=0.6, gamma=0.0,
                                 lipschitz=2.0, reduction="none")
    emma = OF.emma_loss(y, t, epsilon=0.3, temperature=0.6, lipschitz=2.0, reduction="none")
    assert torch.allclose(la, emma, rtol=1e-12)


def test_epsilon_zero_is_plain_tempered_cross_entropy():
    y, t = _batch(seed=4)
    assert torch.allclose(OF.emma_loss(y, t, epsilon=0.0, reduction="none"),
                          TF.cross_entropy(y, t, reduction="none"), rtol=1e-12)
    assert torch.allclose(OF.emma_loss(y, t, epsilon=0.0, temperature=0.3, reduction="none"),
                          0.3 * TF.cross_entropy(y / 0.3, t, reduction="none"), rtol=1e-12)
    # EMMA never lowers the loss: every other class is pushed up
    assert (OF.emma_loss(y, t, reduction="none")
            > TF.cross_entropy(y, t, reduction="none")).all()


@pytest.mark.parametrize("name", list(MARGIN))
def test_invariant_to_a_constant_added_to_every_logit(name):
    fn = MARGIN[name]
    y, t = _batch(seed=5)
    base = fn(y, t, "none")
    for c in (-3.7, 0.25, 11.0):
        assert torch.allclose(fn(y + c, t, "none"), base, rtol=1e-10, atol=1e-12), c
    # per sample, not per batch: a different constant on each row
    rows = torch.linspace(-5, 5, y.shape[0], dtype=y.dtype)[:, None]
    assert torch.allclose(fn(y + rows, t, "none"), base, rtol=1e-10, atol=1e-12)


# ==== gradients =============================================================================


@pytest.mark.parametrize("temp", [1.0, 0.5])
def test_emma_radius_carries_no_gradient(temp):
    """d loss/d y equals d/dy of T·CE((y + c)/T) with c = y′ − y held constant: the clipped
    radius r is detached (with r differentiable the two would differ)."""
    y, t = _batch(n=10, k=4, seed=6)
    eps, lip = 0.8, 1.3
    y1 = y.clone().requires_grad_(True)
    OF.emma_loss(y1, t, epsilon=eps, lipschitz=lip, temperature=temp).backward()
    c = (_emma_logits(y, t, epsilon=eps, lipschitz=lip) - y).detach()
    # some radii are strictly inside the clip, where a differentiable r would matter
    s = y - y.gather(1, t[:, None])
    r = -s / (R2 * lip * eps)
    assert ((r > 0.01) & (r < 1)).any()
    y2 = y.clone().requires_grad_(True)
    (temp * TF.cross_entropy((y2 + c) / temp, t)).backward()
    assert torch.allclose(y1.grad, y2.grad, rtol=1e-10, atol=1e-14)
    # the same through Logit Annealing's EMMA shift (γ = 0, ξ = 0)
    y3 = y.clone().requires_grad_(True)
    OF.logit_annealing_loss(y3, t, epsilon=eps, offset=0.0, temperature=temp, gamma=0.0,
                            lipschitz=lip).backward()
    assert torch.allclose(y3.grad, y2.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 5.0])
@pytest.mark.parametrize("margin", [1e3, 30.0])
def test_finite_gradients_as_pt_goes_to_one(dtype, gamma, margin):
    y = torch.tensor([[margin, 0.0, -1.0], [0.5, margin, 0.0], [0.0, 0.0, margin]], dtype=dtype)
    t = torch.tensor([0, 1, 2])
    fns = {
        "la": lambda v: OF.logit_annealing_loss(v, t, gamma=gamma),
        "la_no_emma": lambda v: OF.logit_annealing_loss(v, t, gamma=gamma, emma=False),
        "la_no_offset": lambda v: OF.logit_annealing_loss(v, t, gamma=gamma, offset=0.0),
        "emma": lambda v: OF.emma_loss(v, t),
        "offset_ce": lambda v: OF.offset_cross_entropy_loss(v, t),
    }
    for name, fn in fns.items():
        v = y.clone().requires_grad_(True)
        out = fn(v)
        out.backward()
        assert torch.isfinite(out) and float(out.detach()) >= 0, (name, out)
        assert torch.isfinite(v.grad).all(), (name, v.grad)
        assert float(v.grad.abs().max()) < 1.0, (name, v.grad)  # the loss is flat out there


@pytest.mark.parametrize("gamma", [0.0, 0.5, 5.0])
def test_la_gradient_matches_finite_differences(gamma):
    y, t = _batch(n=5, k=3, seed=7)
    fn = lambda v: OF.logit_annealing_loss(v, t, epsilon=0.0, gamma=gamma)  # noqa: E731
    v = y.clone().requires_grad_(True)
    fn(v).backward()
    h = 1e-6
    num = torch.zeros_like(y)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            e = torch.zeros_like(y)
            e[i, j] = h
            num[i, j] = (fn(y + e) - fn(y - e)) / (2 * h)
    assert torch.allclose(v.grad, num, atol=1e-7)


# ==== reductions, dtypes, modules ===========================================================


@pytest.mark.parametrize("name", list(MARGIN))
def test_reductions(name):
    fn = MARGIN[name]
    y, t = _batch(n=9, k=3)
    none = fn(y, t, "none")
    assert none.shape == (9,) and (none >= 0).all()
    assert fn(y, t, "mean").shape == () and fn(y, t, "sum").shape == ()
    assert float(fn(y, t, "sum")) == pytest.approx(float(none.sum()), rel=1e-12)
    assert float(fn(y, t, "mean")) == pytest.approx(float(none.mean()), rel=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        fn(y, t, "batchmean")


@pytest.mark.parametrize("name", list(MARGIN))
def test_dtype_is_kept(name):
    y, t = _batch(dtype=torch.float32)
    assert MARGIN[name](y, t, "mean").dtype == torch.float32
    assert MARGIN[name](y.double(), t, "mean").dtype == torch.float64


def _modules_and_twins():
    return [
        (L.OffsetCrossEntropyLoss(0.3, temperature=0.5),
         lambda y, t, r, s: OF.offset_cross_entropy_loss(y, t, offset=0.3 * s, temperature=0.5,
                                                         reduction=r)),
        (L.EMMALoss(0.4, lipschitz=1.7, temperature=0.8),
         lambda y, t, r, s: OF.emma_loss(y, t, epsilon=0.4 * s, lipschitz=1.7, temperature=0.8,
                                         reduction=r)),
        (L.LogitAnnealingLoss(0.4, offset=1.1, temperature=0.6, gamma=2.0, lipschitz=1.7),
         lambda y, t, r, s: OF.logit_annealing_loss(y, t, epsilon=0.4 * s, offset=1.1,
                                                    temperature=0.6, gamma=2.0, lipschitz=1.7,
                                                    reduction=r)),
        (L.LogitAnnealingLoss(0.4, offset=1.1, emma=False),
         lambda y, t, r, s: OF.logit_annealing_loss(y, t, offset=1.1, emma=False, reduction=r)),
    ]


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0])
def test_module_equals_functional_with_epsilon_scale(case, scale):
    module, twin = _modules_and_twins()[case]
    y, t = _batch(seed=8)
    module.epsilon_scale = scale
    assert torch.equal(module(y, t), twin(y, t, "mean", scale))
    for r in ("none", "sum"):
        m = type(module)(**{**_init_kwargs(module), "reduction": r})
        m.epsilon_scale = scale
        assert torch.equal(m(y, t), twin(y, t, r, scale)), r


def _init_kwargs(module):
    if isinstance(module, L.OffsetCrossEntropyLoss):
        return {"offset": module.offset, "temperature": module.temperature}
    if isinstance(module, L.EMMALoss):
        return {"epsilon": module.epsilon, "lipschitz": module.lipschitz,
                "temperature": module.temperature}
    return {"epsilon": module.epsilon, "offset": module.offset,
            "temperature": module.temperature, "gamma": module.gamma,
            "lipschitz": module.lipschitz, "emma": module.emma}


def test_module_defaults_are_the_references():
    y, t = _batch(seed=9)
    assert torch.equal(L.OffsetCrossEntropyLoss()(y, t),
                       OF.offset_cross_entropy_loss(y, t, offset=PRACH, temperature=0.25))
    assert torch.equal(L.EMMALoss()(y, t),
                       OF.emma_loss(y, t, epsilon=36 / 255, lipschitz=1.0, temperature=1.0))
    assert torch.equal(L.LogitAnnealingLoss()(y, t),
                       OF.logit_annealing_loss(y, t, epsilon=36 / 255, offset=2.0,
                                               temperature=0.75, gamma=5.0, lipschitz=1.0))
    assert torch.equal(OF.logit_annealing_loss(y, t),
                       OF.logit_annealing_loss(y, t, epsilon=36 / 255, offset=2.0,
                                               temperature=0.75, gamma=5.0, lipschitz=1.0,
                                               emma=True))


# ==== the ε-ramp protocol ===================================================================


def test_ramps_epsilon_flags():
    ramping = {"OffsetCrossEntropyLoss", "EMMALoss", "LogitAnnealingLoss"}
    for name in L.__all__:
        cls = getattr(L, name)
        assert cls.ramps_epsilon is (name in ramping), name
        module = cls()
        if name in ramping:
            assert module.epsilon_scale == 1.0 and type(module.epsilon_scale) is float, name
            assert "epsilon_scale" not in module.state_dict(), name
            assert not any(n == "epsilon_scale" for n, _ in module.named_buffers()), name
        else:
            assert not hasattr(module, "epsilon_scale"), name


def test_epsilon_scale_zero():
    """s = 0: EMMA is plain T·CE(y/T), the offset CE is T·CE(y/T) (no offset), and LA drops
    its EMMA shift but keeps its offset ξ."""
    y, t = _batch(seed=10)
    emma = L.EMMALoss(0.5, lipschitz=2.0, temperature=0.7, reduction="none")
    oce = L.OffsetCrossEntropyLoss(0.6, temperature=0.25, reduction="none")
    la = L.LogitAnnealingLoss(0.5, offset=1.5, lipschitz=2.0, reduction="none")
    before = emma(y, t), oce(y, t), la(y, t)
    for loss in (emma, oce, la):
        loss.epsilon_scale = 0.0
    assert torch.allclose(emma(y, t), 0.7 * TF.cross_entropy(y / 0.7, t, reduction="none"),
                          rtol=1e-12)
    assert torch.allclose(oce(y, t), 0.25 * TF.cross_entropy(y / 0.25, t, reduction="none"),
                          rtol=1e-12)
    assert torch.allclose(la(y, t), OF.logit_annealing_loss(y, t, offset=1.5, emma=False,
                                                            reduction="none"), rtol=1e-12)
    # and the scale did something: each loss is larger at s = 1
    for b, loss in zip(before, (emma, oce, la), strict=True):
        assert (b > loss(y, t)).all()
    # state_dict round trip leaves the (trainer-owned) scale alone
    emma.load_state_dict(L.EMMALoss().state_dict())
    assert emma.epsilon_scale == 0.0


# ==== build_loss ============================================================================


def test_build_loss_margin_names_and_defaults():
    b = L.build_loss
    oce = b("offset-ce", num_classes=10)
    assert isinstance(oce, L.OffsetCrossEntropyLoss)
    assert oce.offset == pytest.approx(PRACH) and oce.temperature == 0.25
    # offset None: 2·√2·L·ε, Prach's offset scaled by the network's bound
    oce = b("offset-ce", num_classes=10, lipschitz=4.1, epsilon=72 / 255)
    assert oce.offset == pytest.approx(2 * R2 * 4.1 * 72 / 255)
    oce = b("offset-ce", num_classes=10, offset=0.7, temperature=0.5, lipschitz=4.1)
    assert (oce.offset, oce.temperature) == (0.7, 0.5)

    emma = b("emma", num_classes=3, epsilon=0.2, lipschitz=4.1)
    assert isinstance(emma, L.EMMALoss)
    assert (emma.epsilon, emma.lipschitz, emma.temperature) == (0.2, 4.1, 1.0)
    assert b("emma", num_classes=3, temperature=0.3).temperature == 0.3

    la = b("la", num_classes=10)
    assert isinstance(la, L.LogitAnnealingLoss)
    assert (la.epsilon, la.offset, la.temperature, la.gamma, la.lipschitz, la.emma) == (
        36 / 255, 2.0, 0.75, 5.0, 1.0, True)
    la = b("la", num_classes=10, offset=1.0, temperature=0.5, gamma=0.0, epsilon=0.1,
           lipschitz=2.0)
    assert (la.epsilon, la.offset, la.temperature, la.gamma, la.lipschitz) == (
        0.1, 1.0, 0.5, 0.0, 2.0)
    for name in ("offset-ce", "emma", "la"):
        assert b(name, num_classes=5).ramps_epsilon
        with pytest.raises(ValueError, match=f"The {name} loss needs K >= 2 outputs"):
            b(name, num_classes=1)
    # the older names are unchanged
    assert isinstance(b("ce", num_classes=3), L.TauCrossEntropyLoss)
    assert not b("ce", num_classes=3).ramps_epsilon
    with pytest.raises(ValueError, match="expected one of kr, hinge, hkr, ce, offset-ce, emma, la"):
        b("focal", num_classes=3)
    with pytest.raises(ValueError, match="lipschitz to be positive"):
        b("offset-ce", num_classes=3, lipschitz=-1.0)


# ==== errors ================================================================================


@pytest.mark.parametrize("kwargs,match", [
    ({"epsilon": -0.1}, "epsilon to be non-negative, but got epsilon=-0.1"),
    ({"temperature": 0.0}, "temperature to be positive, but got temperature=0.0"),
    ({"temperature": float("nan")}, "temperature to be positive"),
    ({"gamma": -1.0}, "gamma to be non-negative, but got gamma=-1.0"),
    ({"lipschitz": 0.0}, "lipschitz to be positive, but got lipschitz=0.0"),
    ({"offset": -0.5}, "offset to be non-negative, but got offset=-0.5"),
])
def test_bad_hyper_parameters(kwargs, match):
    y, t = _batch(n=4, k=3)
    accepts = {
        OF.offset_cross_entropy_loss: {"offset", "temperature"},
        OF.emma_loss: {"epsilon", "lipschitz", "temperature"},
        OF.logit_annealing_loss: {"epsilon", "offset", "temperature", "gamma", "lipschitz"},
    }
    modules = {OF.offset_cross_entropy_loss: L.OffsetCrossEntropyLoss,
               OF.emma_loss: L.EMMALoss, OF.logit_annealing_loss: L.LogitAnnealingLoss}
    tried = 0
    for fn, names in accepts.items():
        if set(kwargs) <= names:
            tried += 1
            with pytest.raises(ValueError, match=match):
                fn(y, t, **kwargs)
            with pytest.raises(ValueError, match=match):
                modules[fn](**kwargs)
    assert tried >= 1
    # the ramp cannot sneak a negative ε past the check
    if "epsilon" in kwargs:
        loss = L.EMMALoss()
        loss.epsilon_scale = -1.0
        with pytest.raises(ValueError, match="epsilon to be non-negative"):
            loss(y, t)


@pytest.mark.parametrize("name", list(MARGIN))
def test_bad_inputs(name):
    fn = MARGIN[name]
    y, t = _batch(n=4, k=3)
    with pytest.raises(IndexError, match=r"class labels in \[0, 3\)"):
        fn(y, torch.tensor([0, 1, 2, 3]), "mean")
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        fn(y[:, 0], t, "mean")
    with pytest.raises(ValueError, match="at least 2 classes"):
        fn(y[:, :1], torch.zeros(4, dtype=torch.long), "mean")
    with pytest.raises(ValueError, match="Expected 4 labels for 4 rows"):
        fn(y, t[:2], "mean")
    with pytest.raises(ValueError, match="fractional"):
        fn(y, torch.tensor([0.0, 1.5, 2.0, 1.0]), "mean")
