# SPDX-License-Identifier: MIT
"""Certificates: the radius formulas, certified accuracy, Lipschitz bounds and estimates, and
the promise itself: on trained models, no attack finds an adversarial example closer than
the certified radius (and the attack is strong enough for that to mean something)."""

from __future__ import annotations

import math

import pytest
import torch
from checks import adversarial_lipschitz_ratio
from sklearn.datasets import make_blobs
from torch import nn

import onelip.nn as onn
from onelip import certify, data, losses, models
from onelip.data import DataSplit
from onelip.train import TrainConfig, fit

SQRT2 = math.sqrt(2)
TOL_RADIUS = 1e-5  # float32 logits: radii agree to rounding (absolute, radii are O(0.1-1))
TOL_ATTACK = 1e-4  # relative: a found adversarial may sit at r·(1 − rounding), never below
TOL_LIP = 1e-5  # float32 forward: an empirical float32 slope can exceed a bound of 1 by ~1e-7
# (estimate_lipschitz is evaluated in float64 and needs no tolerance)


# ==== certified_radius ======================================================================


def test_binary_radius_formula():
    f = torch.tensor([0.5, -2.0, 0.0, 1.5])
    assert torch.equal(certify.certified_radius(f), torch.tensor([0.5, 2.0, 0.0, 1.5]))
    assert torch.equal(certify.certified_radius(f[:, None], lipschitz=2.0),
                       torch.tensor([0.25, 1.0, 0.0, 0.75]))
    # with labels: y f / L, ≤ 0 when misclassified; {0,1} and {-1,+1} agree
    y01 = torch.tensor([1, 1, 0, 0])
    want = torch.tensor([0.5, -2.0, -0.0, -1.5])
    assert torch.equal(certify.certified_radius(f, y01), want)
    assert torch.equal(certify.certified_radius(f, 2 * y01 - 1), want)
    assert torch.equal(certify.certified_radius(f, 1 - y01), -want)  # flipped labels
    assert (want[[1, 3]] < 0).all()  # the misclassified points


def test_multiclass_radius_formula():
    f = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 1.0, -1.0]])
    # no labels: (top1 − top2)/(√2 L)
    want = torch.tensor([2.0, 0.5, 0.0]) / SQRT2
    assert torch.allclose(certify.certified_radius(f), want)
    assert torch.allclose(certify.certified_radius(f, lipschitz=4.0), want / 4)
    # labels: (f_y − max_{j≠y} f_j)/(√2 L); negative when misclassified
    y = torch.tensor([0, 0, 2])
    want_y = torch.tensor([2.0, -2.0, -2.0]) / SQRT2
    assert torch.allclose(certify.certified_radius(f, y), want_y)
    assert (certify.certified_radius(f, torch.tensor([1, 2, 0])) <= 0).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_radius_rejects_bad_lipschitz(bad):
    with pytest.raises(ValueError, match="positive finite lipschitz"):
        certify.certified_radius(torch.randn(3, 2), lipschitz=bad)
    with pytest.raises(ValueError, match="positive finite lipschitz"):
        certify.last_layer_radius(torch.randn(3, 2), torch.randn(2, 4), lipschitz=bad)


def test_radius_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"Expected logits of shape \(N,\) or \(N, K\)"):
        certify.certified_radius(torch.randn(2, 3, 4))


# ==== last_layer_radius =====================================================================


@pytest.mark.parametrize("k,d", [(3, 8), (10, 16), (10, 10), (5, 3)])
def test_last_layer_radius_at_least_margin_radius(k, d):
    """‖w_i − w_j‖ ≤ √2‖W‖₂ ≤ √2, so for a head with ‖W‖₂ ≤ 1 the last-layer radius is never
    smaller than margin/√2 on correct points (and both are ≤ 0 on wrong ones)."""
    g = torch.Generator().manual_seed(k * d)
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    w = w / torch.linalg.matrix_norm(w, ord=2)
    logits = torch.randn(200, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (200,), generator=g)
    for labels in (None, y):
        ll = certify.last_layer_radius(logits, w, labels)
        mr = certify.certified_radius(logits, labels)
        pos = mr > 0
        assert (ll[pos] >= mr[pos] - 1e-12).all(), float((mr - ll)[pos].max())
        assert ((ll > 0) == pos).all()
    assert (certify.last_layer_radius(logits, w, y, lipschitz=2.0)
            == certify.last_layer_radius(logits, w, y) / 2).all()


@pytest.mark.parametrize("k,d", [(3, 8), (10, 16), (10, 10)])
def test_last_layer_radius_equals_margin_radius_for_orthonormal_rows(k, d):
    q = torch.linalg.qr(torch.randn(d, k, dtype=torch.float64))[0].T  # (k, d), orthonormal rows
    logits = torch.randn(100, k, dtype=torch.float64)
    y = torch.randint(0, k, (100,))
    for labels in (None, y):
        assert torch.allclose(certify.last_layer_radius(logits, q, labels),
                              certify.certified_radius(logits, labels), atol=1e-12)


def test_last_layer_radius_hand_value():
    w = torch.tensor([[1.0, 0.0], [0.0, 0.5], [0.6, 0.8]])
    logits = torch.tensor([[2.0, 1.0, 1.5]])
    # class 0: (2−1)/‖(1,−.5)‖ = 1/√1.25, (2−1.5)/‖(.4,−.8)‖ = .5/√.8
    want = min(1 / math.sqrt(1.25), 0.5 / math.sqrt(0.8))
    assert float(certify.last_layer_radius(logits, w)[0]) == pytest.approx(want, rel=1e-6)


# ==== exact distances on linear models: attack and radius both tight ========================


def test_linear_binary_model_attack_and_radius_are_exact():
    """f(x) = w·x + b with ‖w‖ = 1: the minimal adversarial distance is exactly |f(x)|."""
    model = onn.Sequential(nn.Flatten(), onn.FrobeniusLinear(5, 1)).eval()
    x = torch.randn(100, 5)
    with torch.no_grad():
        y = (model(x)[:, 0] > 0).long()
    radius = certify.certified_radius(model(x).detach(), y)
    res = certify.attack_l2(model, x, y, max_eps=4.0, steps=40, restarts=1)
    found = torch.isfinite(res.min_norm)
    assert found[radius < 3.9].all()
    assert (res.min_norm[found] >= radius[found] * (1 - TOL_ATTACK)).all()
    assert (res.min_norm[found] <= radius[found] * 1.01 + 1e-2).all(), "attack too weak"


def test_linear_multiclass_model_attack_matches_last_layer_radius():
    """f(x) = W x + b: the exact minimal adversarial distance is the last-layer radius
    min_j (f_y − f_j)/‖w_y − w_j‖ (body = identity, L = 1); margin/√2 is smaller."""
    torch.manual_seed(3)
    model = onn.Sequential(nn.Flatten(), onn.SpectralLinear(4, 5)).eval()
    x = torch.randn(150, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    acc_ll = certify.certified_accuracy(model, x, y, [0.0], method="last_layer")
    acc_m = certify.certified_accuracy(model, x, y, [0.0])
    r_ll, r_m = acc_ll["radii"], acc_m["radii"]
    assert (r_ll >= r_m - TOL_RADIUS).all()
    assert (r_ll > r_m * 1.01).float().mean() > 0.5  # strictly tighter for most points
    res = certify.attack_l2(model, x, y, max_eps=4.0, steps=50, restarts=2)
    found = torch.isfinite(res.min_norm) & (r_ll > 1e-3)
    assert found.float().mean() > 0.9
    ratio = res.min_norm[found] / r_ll[found]
    assert ratio.min() >= 1 - TOL_ATTACK, float(ratio.min())
    assert ratio.median() <= 1.02, f"attack too weak: median ratio {float(ratio.median())}"


# ==== certified_accuracy ====================================================================


def test_certified_accuracy_tiny_binary_model():
    """f(x) = x₀ (a unit-norm binary head): radii are |x₀| with the sign of the label."""
    model = onn.Sequential(nn.Flatten(), onn.FrobeniusLinear(2, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[3.0, 0.0]]))  # normalised to (1, 0)
    x = torch.tensor([[0.2, 5.0], [0.7, -1.0], [-1.5, 0.0], [0.4, 0.0]])
    y = torch.tensor([1, 1, 0, 0])  # the last one is misclassified
    res = certify.certified_accuracy(model, x, y, eps=(0.0, 0.5, 1.0))
    assert torch.allclose(res["radii"], torch.tensor([0.2, 0.7, 1.5, -0.4]))
    assert res["clean"] == pytest.approx(0.75)
    assert res["certified"] == {0.0: pytest.approx(0.75), 0.5: pytest.approx(0.5),
                                1.0: pytest.approx(0.25)}
    ll = certify.certified_accuracy(model, x, y, eps=(0.5,), method="last_layer")
    assert torch.allclose(ll["radii"], res["radii"])
    # a given Lipschitz constant scales the radii
    res2 = certify.certified_accuracy(model, x, y, eps=(0.5,), lipschitz=2.0)
    assert torch.allclose(res2["radii"], res["radii"] / 2)


def test_certified_accuracy_tiny_multiclass_model_and_mode_restored():
    model = onn.Sequential(nn.Flatten(), onn.OrthoLinear(3, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3))
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 0])
    model.train()
    res = certify.certified_accuracy(model, x, y, eps=(0.5,))
    assert model.training, "certified_accuracy must restore the mode"
    assert torch.allclose(res["radii"], torch.tensor([1.0, 1.5, -1.0]) / SQRT2, atol=1e-6)
    assert res["clean"] == pytest.approx(2 / 3)
    assert res["certified"][0.5] == pytest.approx(2 / 3)


def test_certified_accuracy_errors():
    model = onn.Sequential(nn.Flatten(), onn.OrthoLinear(2, 3))
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="non-negative finite eps"):
        certify.certified_accuracy(model, x, y, eps=(-0.1,))
    with pytest.raises(ValueError, match="NaN or infinite"):
        certify.certified_accuracy(model, x.masked_fill(x > 0, float("nan")), y)
    with pytest.raises(ValueError, match="Unknown method 'exact'"):
        certify.certified_accuracy(model, x, y, method="exact")
    with pytest.raises(ValueError, match="needs a Sequential ending in a linear layer"):
        certify.certified_accuracy(onn.Sequential(onn.OrthoLinear(2, 4), onn.MaxMin()), x, y,
                                   method="last_layer")


def test_lipschitz_bound_counts_a_classwise_head():
    """A row-normalised ("classwise") head is not 1-Lipschitz: the bound says so and the
    certificate divides by it; the attack finds nothing below that radius."""
    torch.manual_seed(0)
    head = onn.FrobeniusLinear(8, 6, per_row=True)
    with torch.no_grad():
        head.weight.add_(3 * torch.randn(1, 8))  # correlated rows: ‖W‖₂ > 1
    model = onn.Sequential(onn.OrthoLinear(4, 8), onn.MaxMin(), head).eval()
    bound = certify.lipschitz_bound(model)
    assert bound > 1.5
    assert certify.estimate_lipschitz(model, torch.randn(16, 4)) <= bound
    assert adversarial_lipschitz_ratio(model, (4,), steps=60) <= bound * (1 + TOL_LIP)
    x = torch.randn(100, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    radii = certify.certified_accuracy(model, x, y, (0.1,))["radii"]
    res = certify.attack_l2(model, x, y, max_eps=3.0, steps=30, restarts=1)
    found = torch.isfinite(res.min_norm)
    assert (res.min_norm[found] >= radii[found] * (1 - TOL_ATTACK)).all()


# ==== Lipschitz bound vs estimate ===========================================================


@pytest.mark.parametrize("shape", [(10, 6), (6, 10), (16, 16)])
def test_estimate_lipschitz_recovers_plain_linear_norm(shape):
    lin = nn.Linear(*shape)
    with torch.no_grad():
        lin.weight.mul_(2.5)
    sigma = float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2))
    est = certify.estimate_lipschitz(lin, torch.randn(8, shape[0]))
    assert est == pytest.approx(sigma, rel=1e-2), (est, sigma)
    assert est <= sigma
    assert certify.lipschitz_bound(lin) == pytest.approx(sigma, rel=1e-5)
    assert certify.lipschitz_bound(lin) >= sigma


def test_estimate_lipschitz_works_in_train_mode():
    """Regression: the estimate crashed in train mode (torch.func refuses the in-place
    power-iteration updates of SpectralLinear/OrthoLinear buffers)."""
    model = onn.Sequential(onn.SpectralLinear(4, 8), onn.MaxMin(), onn.OrthoLinear(8, 3)).train()
    est = certify.estimate_lipschitz(model, torch.randn(5, 4), n_power=5, n_ascent=5)
    assert 0.5 < est <= 1 + 1e-3
    assert model.training


@pytest.fixture(scope="module")
def digits_mlp_and_convnet():
    """A trained onelip MLP (models.build("mlp"): 64→64→64→10) and a small convnet (the
    strided preset's shape at 8×8) on digits; the float32 estimate of the MLP was 1.0000025
    against a bound of 1.0 before the estimate was evaluated in float64."""
    d = data.load("digits")
    built = {}
    for name, kw in (("mlp", dict(in_features=64, hidden=(64, 64))),
                     ("convnet", dict(input_shape=d.input_shape, width=8, stages=2, depth=1,
                                      stem="unshuffle"))):
        torch.manual_seed(0)
        model, _ = models.build(name, num_outputs=10, **kw)
        fit(model, d, losses.MulticlassHingeLoss(0.5, mode="top2"),
            TrainConfig(epochs=10 if name == "mlp" else 3, batch_size=64, lr=5e-3),
            progress=False)
        built[name] = model.eval()
    return built, d


def test_estimate_never_exceeds_the_bound_and_is_tight(digits_mlp_and_convnet):
    built, d = digits_mlp_and_convnet
    for name, model in built.items():
        bound = certify.lipschitz_bound(model)
        est = certify.estimate_lipschitz(model, d.x_test[:32])  # the defaults, as inspect
        assert est <= bound, (name, est, bound)  # no tolerance: a true lower bound
        assert est > 0.5, (name, est)
        assert isinstance(est, float)


@pytest.mark.parametrize("seed", range(6))
def test_estimate_bounds_the_weights_as_applied(seed):
    """A row-normalised head: the estimate is at most the exact (float64 SVD) norm of the
    float32 weight the layer applies -- not of the weight recomputed in float64, whose norm
    differs by float32 rounding -- and within 1e-6 of it."""
    torch.manual_seed(seed)
    head = onn.FrobeniusLinear(8, 6, per_row=True)
    with torch.no_grad():
        head.weight.add_(3 * torch.randn(1, 8))
    head.eval()
    applied = head.export().weight.detach().double()
    sigma = float(torch.linalg.matrix_norm(applied, ord=2))
    est = certify.estimate_lipschitz(head, torch.randn(4, 8), n_ascent=5)
    assert est <= sigma, (est, sigma)
    assert est >= sigma * (1 - 1e-6)
    assert est <= certify.lipschitz_bound(head)


def test_estimate_leaves_the_model_as_it_was():
    """In train mode the probes run on a copy: buffers (power-iteration vectors), gradients
    and modes of the caller's model are untouched."""
    model = onn.Sequential(onn.SpectralLinear(4, 8), onn.MaxMin(), onn.OrthoLinear(8, 3)).train()
    model[2].eval()  # a submodule in its own mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    certify.estimate_lipschitz(model, torch.randn(5, 4), n_power=5, n_ascent=5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model[0].training and not model[2].training


def test_lipschitz_bound_unknown_module_is_an_error():
    with pytest.raises(TypeError, match="No certified Lipschitz bound"):
        certify.lipschitz_bound(nn.Sequential(nn.Linear(2, 2), nn.GELU()))


# ==== the promise: trained models ===========================================================


def _blobs() -> DataSplit:
    x, y = make_blobs(n_samples=900, centers=[[0, 0], [2, 0], [0, 2], [2, 2.5]],
                      cluster_std=0.6, random_state=0)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y)
    return DataSplit("blobs", x[:500], y[:500], x[500:], y[500:], 4, (2,))


@pytest.fixture(scope="module")
def moons_model():
    """Two-moons, binary, orthogonal MLP with a FrobeniusLinear head, HKR (≈1 s)."""
    d = data.load("two-moons", n_samples=1500, seed=0)
    torch.manual_seed(0)
    model, _ = models.build("mlp", in_features=2, num_outputs=1, hidden=(32, 32))
    assert isinstance(model[-1], onn.FrobeniusLinear)
    fit(model, d, losses.HKRLoss(alpha=10.0, margin=0.2),
        TrainConfig(epochs=15, batch_size=64, lr=1e-2), progress=False)
    return model.eval(), d


def _multiclass_model(head: type, d: DataSplit, width: int, epochs: int, lr: float):
    torch.manual_seed(0)
    dim = d.x_train.shape[1]
    model = onn.Sequential(nn.Flatten(), onn.OrthoLinear(dim, width), onn.MaxMin(),
                           onn.OrthoLinear(width, width), onn.MaxMin(), head(width, d.num_classes))
    fit(model, d, losses.MulticlassHingeLoss(0.5, mode="top2"),
        TrainConfig(epochs=epochs, batch_size=64, lr=lr), progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def blobs_models():
    d = _blobs()
    return {h.__name__: _multiclass_model(h, d, 32, 15, 1e-2)
            for h in (onn.OrthoLinear, onn.SpectralLinear)}, d


@pytest.fixture(scope="module")
def digits_model():
    d = data.load("digits")
    return _multiclass_model(onn.OrthoLinear, d, 64, 10, 5e-3), d


def _check_promise(model, x, y, radius, *, attack_kw, tight_within=1.5, tight_fraction=0.8):
    """No adversarial closer than the radius; the attack reaches most radii within a factor
    and flips misclassified points at ~0 norm. Returns the ratios for extra checks."""
    res = certify.attack_l2(model, x, y, **attack_kw)
    with torch.no_grad():
        out = model(res.x_adv)
    found = torch.isfinite(res.min_norm)
    # the attack's adversarials are real: misclassified, at the reported distance
    margin = certify.attack._margin(out, y)
    assert (margin[found] < 0).all()
    assert torch.allclose((res.x_adv - x).flatten(1).norm(dim=1)[found], res.min_norm[found],
                          atol=1e-5)
    correct = radius > 0
    ok = correct & found
    ratio = res.min_norm[ok] / radius[ok]
    worst = int(ratio.argmin())
    assert float(ratio.min()) >= 1 - TOL_ATTACK, (
        f"certificate broken: adversarial at {float(res.min_norm[ok][worst])!r} < radius "
        f"{float(radius[ok][worst])!r}")
    frac = float((ratio <= tight_within).float().sum() / correct.sum())
    assert frac >= tight_fraction, (
        f"attack toothless: only {frac:.2%} of certified points attacked within "
        f"{tight_within}x the radius")
    if (~correct).any():
        assert float(res.min_norm[~correct].max()) <= 0.01, "misclassified points not flipped"
    return ratio


def test_promise_two_moons_binary(moons_model):
    model, d = moons_model
    x, y = d.x_test, d.y_test  # 300 points
    assert x.shape[0] >= 300
    res = certify.certified_accuracy(model, x, y, (0.1,))
    assert res["clean"] > 0.85
    ll = certify.certified_accuracy(model, x, y, (0.1,), method="last_layer")
    assert torch.allclose(ll["radii"], res["radii"], atol=TOL_RADIUS)
    for radius in (res["radii"], ll["radii"]):
        _check_promise(model, x, y, radius, tight_within=1.5, tight_fraction=0.9,
                       attack_kw=dict(max_eps=3.0, steps=50, restarts=3, bisection=10))


def test_promise_blobs_ortho_head(blobs_models):
    models_, d = blobs_models
    model = models_["OrthoLinear"]
    x, y = d.x_test, d.y_test  # 400 points
    res = certify.certified_accuracy(model, x, y, (0.1,))
    ll = certify.certified_accuracy(model, x, y, (0.1,), method="last_layer")
    assert res["clean"] > 0.85
    # orthonormal rows: the last-layer radius is the margin radius
    assert torch.allclose(ll["radii"], res["radii"], atol=TOL_RADIUS)
    _check_promise(model, x, y, res["radii"], tight_within=1.5, tight_fraction=0.8,
                   attack_kw=dict(max_eps=3.0, steps=50, restarts=3, bisection=10))


def test_promise_blobs_spectral_head_last_layer_radius(blobs_models):
    """A SpectralLinear head has rows closer than √2: the last-layer radius is strictly larger
    for (here) every point, and still no attack gets inside it."""
    models_, d = blobs_models
    model = models_["SpectralLinear"]
    x, y = d.x_test, d.y_test
    res = certify.certified_accuracy(model, x, y, (0.1,))
    ll = certify.certified_accuracy(model, x, y, (0.1,), method="last_layer")
    assert res["clean"] > 0.85
    ok = res["radii"] > 0
    assert (ll["radii"][ok] >= res["radii"][ok] - TOL_RADIUS).all()
    assert (ll["radii"][ok] > res["radii"][ok] * 1.005).float().mean() > 0.5
    assert ll["certified"][0.1] >= res["certified"][0.1]
    r_margin = _check_promise(model, x, y, res["radii"], tight_within=1.5, tight_fraction=0.8,
                              attack_kw=dict(max_eps=3.0, steps=50, restarts=3, bisection=10))
    r_ll = _check_promise(model, x, y, ll["radii"], tight_within=1.5, tight_fraction=0.9,
                          attack_kw=dict(max_eps=3.0, steps=50, restarts=3, bisection=10))
    assert r_ll.median() < r_margin.median()  # the tighter radius is closer to the truth


def test_promise_digits_ortho_head(digits_model):
    model, d = digits_model
    x, y = d.x_test[:240], d.y_test[:240]
    res = certify.certified_accuracy(model, x, y, (0.1,))
    assert res["clean"] > 0.9
    ll = certify.certified_accuracy(model, x, y, (0.1,), method="last_layer")
    for radius in (res["radii"], ll["radii"]):
        _check_promise(model, x, y, radius, tight_within=1.5, tight_fraction=0.8,
                       attack_kw=dict(max_eps=2.0, steps=30, restarts=2, bisection=8))


def test_bound_dominates_estimate_on_trained_models(moons_model, blobs_models, digits_model):
    trained = [(moons_model[0], moons_model[1].x_test[:32]),
               (blobs_models[0]["OrthoLinear"], blobs_models[1].x_test[:32]),
               (blobs_models[0]["SpectralLinear"], blobs_models[1].x_test[:32]),
               (digits_model[0], digits_model[1].x_test[:32])]
    for model, x in trained:
        bound = certify.lipschitz_bound(model)
        assert bound == 1.0
        est = certify.estimate_lipschitz(model, x, n_power=20, n_ascent=30)
        assert est <= bound, (est, bound)
        assert est > 0.5  # the estimate is not vacuous on a GNP network


# ==== one meaning for binary labels ==========================================================


def _binary_label_encodings():
    """The same labels in every accepted encoding (positive, negative, ...)."""
    y01 = torch.tensor([1, 0, 0, 1, 1, 0])
    return {"int {0,1}": y01, "float {0,1}": y01.float(), "bool": y01.bool(),
            "int ±1": 2 * y01 - 1, "float ±1": (2 * y01 - 1).double(),
            "(N, 1)": y01[:, None]}


def test_binary_labels_mean_the_same_sign_everywhere():
    """Radius, attack margin, losses and accuracy read one sign from every encoding."""
    from onelip.certify.attack import _margin
    from onelip.train import evaluate_accuracy

    f = torch.tensor([0.5, -2.0, 0.3, 1.5, -0.1, -0.7])
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    model = nn.Flatten(0)  # x (N, 1) -> f (N,)
    for name, y in _binary_label_encodings().items():
        assert torch.equal(certify.certified_radius(f, y), sign * f), name
        assert torch.equal(certify.certified_radius(f[:, None], y, lipschitz=2.0),
                           sign * f / 2), name
        assert torch.equal(_margin(f, y), sign * f), name
        hinge = losses.HingeLoss(margin=1.0, reduction="none")(f, y)
        assert torch.equal(hinge, torch.relu(1.0 - sign * f)), name
        assert evaluate_accuracy(model, f[:, None], y.reshape(-1)) == pytest.approx(4 / 6), name
        res = certify.certified_accuracy(model, f[:, None], y.reshape(-1), eps=(0.2,))
        assert res["clean"] == pytest.approx(4 / 6), name


@pytest.mark.parametrize("bad", [[1, 0, 2, 1], [1.0, 0.5, 0.0, 1.0], [-1, 0, 1, 1]])
def test_bad_binary_labels_are_rejected_everywhere(bad):
    """2, 0.5 and a mix of the two encodings: the same ValueError, naming the values, from the
    certificates, the attack and the losses (certify used to give radius 2f for a label 2)."""
    from onelip.train import evaluate_accuracy

    f = torch.tensor([0.5, -2.0, 0.3, 1.5])
    y = torch.tensor(bad)
    model = onn.Sequential(nn.Flatten(), onn.FrobeniusLinear(2, 1))
    x = torch.randn(4, 2)
    match = r"binary labels in \{0, 1\} or \{-1, \+1\}.*got values"
    calls = {
        "certified_radius": lambda: certify.certified_radius(f, y),
        "certified_accuracy": lambda: certify.certified_accuracy(model, x, y),
        "certified_accuracy last_layer": lambda: certify.certified_accuracy(
            model, x, y, method="last_layer"),
        "attack_l2": lambda: certify.attack_l2(model, x, y, steps=2, restarts=1),
        "HingeLoss": lambda: losses.HingeLoss()(f, y),
        "KRLoss": lambda: losses.KRLoss()(f, y),
        "evaluate_accuracy": lambda: evaluate_accuracy(model, x, y),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(ValueError, match=str(bad[2])):  # the message names the values
        certify.certified_radius(f, y)


def test_multiclass_labels_are_checked_by_the_certificates():
    """Class indices in [0, K), as for the losses: 1.5 is not silently truncated to 1."""
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5]])
    w = torch.eye(3)
    with pytest.raises(ValueError, match="fractional"):
        certify.certified_radius(logits, torch.tensor([0.0, 1.5]))
    with pytest.raises(IndexError, match=r"class labels in \[0, 3\)"):
        certify.certified_radius(logits, torch.tensor([0, 3]))
    with pytest.raises(IndexError, match=r"class labels in \[0, 3\)"):
        certify.last_layer_radius(logits, w, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="fractional"):
        certify.last_layer_radius(logits, w, torch.tensor([0.0, 1.5]))
    # float labels that are integers still work
    assert torch.equal(certify.certified_radius(logits, torch.tensor([0.0, 1.0])),
                       certify.certified_radius(logits, torch.tensor([0, 1])))


def test_is_binary_output():
    from onelip._validation import is_binary_output

    assert is_binary_output(torch.zeros(5))
    assert is_binary_output(torch.zeros(5, 1))
    assert is_binary_output(torch.zeros(0, 1))
    assert not is_binary_output(torch.zeros(5, 2))
    assert not is_binary_output(torch.zeros(5, 1, 1))
    assert not is_binary_output(torch.zeros(()))


# ==== modes: each submodule's own mode comes back ===========================================


class _Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_attack_restores_each_submodules_mode():
    model = onn.Sequential(nn.Flatten(), onn.OrthoLinear(3, 3)).train()
    model[1].eval()  # e.g. a frozen layer
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    certify.attack_l2(model, x, y, steps=2, restarts=1, bisection=1, deepfool_steps=2)
    assert model.training and model[0].training and not model[1].training
    broken = nn.Sequential(nn.Flatten(), _Boom()).train()
    with pytest.raises(RuntimeError, match="boom"):
        certify.attack_l2(broken, x, y)
    assert all(m.training for m in broken.modules())
