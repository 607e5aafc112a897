# SPDX-License-Identifier: MIT
"""What the certificates accept: labels (never broadcast, truncated or read as one-hot), ε (one
number or several), empty batches, argument checks, and the precision they are computed in
(float32 or better whatever the ambient autocast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import onelip.nn as onn
from onelip import certify

SQRT2 = math.sqrt(2)
N = 40


def _multiclass_model() -> nn.Module:
    torch.manual_seed(0)
    return onn.Sequential(nn.Flatten(), onn.OrthoLinear(4, 16), onn.MaxMin(),
                          onn.SpectralLinear(16, 16), onn.GroupSort(2),
                          onn.OrthoLinear(16, 3)).eval()


def _binary_model() -> nn.Module:
    torch.manual_seed(1)
    return onn.Sequential(nn.Flatten(), onn.OrthoLinear(4, 16), onn.MaxMin(),
                          onn.FrobeniusLinear(16, 1)).eval()


@pytest.fixture(scope="module")
def multiclass():
    model = _multiclass_model()
    x = torch.randn(N, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 3  # a third misclassified
    return model, x, y


@pytest.fixture(scope="module")
def binary():
    model = _binary_model()
    x = torch.randn(N, 4, generator=torch.Generator().manual_seed(3))
    y = (torch.rand(N, generator=torch.Generator().manual_seed(4)) > 0.5).long()
    return model, x, y


def _entry_points(model, x, logits, w):
    """Every function that reads labels, as f(y)."""
    return {
        "certified_accuracy": lambda y: certify.certified_accuracy(model, x, y, eps=[0.1]),
        "certified_accuracy last_layer": lambda y: certify.certified_accuracy(
            model, x, y, eps=[0.1], method="last_layer"),
        "certified_radius": lambda y: certify.certified_radius(logits, y),
        **({"last_layer_radius": lambda y: certify.last_layer_radius(logits, w, y)}
           if logits.shape[-1] > 1 else {}),
        "attack_l2": lambda y: certify.attack_l2(model, x, y, steps=1, restarts=1,
                                                 bisection=0, deepfool_steps=1),
    }


# ==== labels ================================================================================


def test_a_length_1_label_is_not_broadcast(multiclass):
    """y[:1] used to be read as the label of every point (0.314 certified instead of 0.433 in
    the report); it is an error naming both lengths, in every entry point."""
    model, x, y = multiclass
    logits = model(x).detach()
    w = model[-1].effective_weight()
    full = certify.certified_accuracy(model, x, y, eps=[0.1])
    radii = certify.certified_radius(logits, y)
    assert full["clean"] == pytest.approx(float((radii > 0).float().mean()))
    assert full["certified"][0.1] == pytest.approx(float((radii > 0.1).float().mean()))
    for name, call in _entry_points(model, x, logits, w).items():
        for bad in (y[:1], y[:7], torch.cat([y, y])):
            with pytest.raises(ValueError, match=rf"Expected {N} labels for {N} points, but "
                                                 rf"got {bad.numel()}"):
                call(bad)
            assert name


def test_labels_are_not_truncated_or_read_out_of_range(multiclass):
    model, x, y = multiclass
    logits = model(x).detach()
    w = model[-1].effective_weight()
    for name, call in _entry_points(model, x, logits, w).items():
        with pytest.raises(ValueError, match="fractional"):  # 3.7 is not class 3
            call(y.float() + 0.7)
        with pytest.raises(IndexError, match=r"class labels in \[0, 3\)"):
            call(y + 3)
        with pytest.raises(IndexError, match=r"class labels in \[0, 3\)"):
            call(y - 1)
        # integer-valued floats and (N, 1) labels are the same labels
        ref = call(y)
        for same in (y.double(), y[:, None]):
            got = call(same)
            if isinstance(ref, dict):
                assert got["certified"] == ref["certified"], name
            elif isinstance(ref, torch.Tensor):
                assert torch.equal(got, ref), name


def test_one_hot_labels_are_refused_with_a_hint(multiclass):
    """One-hot labels used to be flattened to N·K labels ('got 120' for 40 points)."""
    model, x, y = multiclass
    logits = model(x).detach()
    w = model[-1].effective_weight()
    one_hot = torch.nn.functional.one_hot(y, 3)
    for call in _entry_points(model, x, logits, w).values():
        with pytest.raises(ValueError, match=r"shape \(40, 3\); one-hot .*y\.argmax\(1\)"):
            call(one_hot)
        with pytest.raises(ValueError, match=r"labels of shape \(N,\) or \(N, 1\)"):
            call(y[:, None, None])


def test_labels_must_be_tensors(multiclass):
    model, x, y = multiclass
    logits = model(x).detach()
    w = model[-1].effective_weight()
    for call in _entry_points(model, x, logits, w).values():
        with pytest.raises(TypeError, match="torch.Tensor, but got list"):
            call(y.tolist())


def test_binary_labels_lengths_and_shapes(binary):
    model, x, y = binary
    logits = model(x).detach()
    for call in _entry_points(model, x, logits, None).values():
        with pytest.raises(ValueError, match=rf"Expected {N} labels for {N} points, but got 1"):
            call(y[:1])
        with pytest.raises(ValueError, match=r"shape \(40, 2\); one-hot"):
            call(torch.nn.functional.one_hot(y, 2))
        with pytest.raises(ValueError, match=r"binary labels in \{0, 1\}"):
            call(y.float() + 0.7)


# ==== eps, batch size, points ===============================================================


def test_a_scalar_eps_is_a_list_of_one(multiclass):
    """eps=0.1 failed with "'float' object is not iterable"; it gives the same dict as [0.1]."""
    model, x, y = multiclass
    ref = certify.certified_accuracy(model, x, y, eps=[0.1])
    for eps in (0.1, np.float64(0.1), torch.tensor(0.1, dtype=torch.float64), (0.1,),
                np.array(0.1), np.array([0.1])):
        got = certify.certified_accuracy(model, x, y, eps=eps)
        assert got["certified"] == ref["certified"], eps
        assert list(got["certified"]) == [0.1] and type(next(iter(got["certified"]))) is float
    assert certify.certified_accuracy(model, x, y, eps=1)["certified"].keys() == {1.0}
    two = certify.certified_accuracy(model, x, y, eps=[0.3, 0.1])
    assert list(two["certified"]) == [0.3, 0.1]


@pytest.mark.parametrize("eps,error,match", [
    ("0.1", TypeError, "number or a sequence"),
    (["0.1"], TypeError, "numbers, but got str"),
    ([True], TypeError, "numbers, but got bool"),
    (None, TypeError, "number or a sequence"),
    (-0.1, ValueError, "non-negative finite eps"),
    ([0.1, float("nan")], ValueError, "non-negative finite eps"),
    ([float("inf")], ValueError, "non-negative finite eps"),
])
def test_bad_eps(multiclass, eps, error, match):
    model, x, y = multiclass
    with pytest.raises(error, match=match):
        certify.certified_accuracy(model, x, y, eps=eps)


def test_an_empty_batch(multiclass, binary):
    """certified_accuracy of no points failed inside torch.cat; it is a ValueError saying so.
    The per-point functions return empty results."""
    for model, x, y in (multiclass, binary):
        for method in ("margin", "last_layer"):
            with pytest.raises(ValueError, match=r"x holds no points \(shape \(0, 4\)\)"):
                certify.certified_accuracy(model, x[:0], y[:0], method=method)
        with pytest.raises(ValueError, match="Expected 0 labels for 0 points, but got 40"):
            certify.attack_l2(model, x[:0], y)
        logits = model(x[:0]).detach()
        assert certify.certified_radius(logits, y[:0]).shape == (0,)
        assert certify.certified_radius(logits).shape == (0,)
        att = certify.attack_l2(model, x[:0], y[:0], steps=1)
        assert att.min_norm.shape == (0,) and att.x_adv.shape == (0, 4)
    model, x, _ = multiclass
    logits = model(x[:0]).detach()
    assert certify.last_layer_radius(logits, model[-1].effective_weight()).shape == (0,)


def test_other_arguments_are_checked(multiclass):
    model, x, y = multiclass
    with pytest.raises(ValueError, match="batch_size to be an integer >= 1"):
        certify.certified_accuracy(model, x, y, batch_size=0)  # was range() arg 3 error
    with pytest.raises(ValueError, match="batch_size"):
        certify.certified_accuracy(model, x, y, batch_size=2.5)
    with pytest.raises(TypeError, match="x to be a torch.Tensor"):
        certify.certified_accuracy(model, x.tolist(), y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        certify.attack_l2(model, x.masked_fill(x > 1, float("inf")), y)
    with pytest.raises(ValueError, match="Unknown method 'exact'"):
        certify.certified_accuracy(model, x, y, method="exact")
    for kwargs, match in (({"max_eps": 0.0}, "positive finite max_eps"),
                          ({"max_eps": float("nan")}, "positive finite max_eps"),
                          ({"steps": 0}, "steps to be an integer >= 1"),  # was ZeroDivision
                          ({"restarts": -1}, "restarts to be an integer >= 0"),
                          ({"overshoot": -0.5}, "non-negative finite overshoot")):
        with pytest.raises(ValueError, match=match):
            certify.attack_l2(model, x, y, **kwargs)
    with pytest.raises(ValueError, match=r"weight of shape \(3, D\)"):
        certify.last_layer_radius(model(x).detach(), torch.eye(4), y)
    with pytest.raises(ValueError, match="for one output use certified_radius"):
        certify.last_layer_radius(torch.randn(5, 1), torch.randn(1, 3))


# ==== precision: float32 or better whatever the ambient autocast ============================


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("kind", ["multiclass", "binary"])
def test_certificates_are_float32_under_autocast(kind, multiclass, binary):
    """Under torch.autocast(bf16) the radii came back in bf16 (margins rounded to 8 bits,
    off by ~1e-2): they are now those of the float32 model, bit for bit. (The dense layers
    themselves now run in float32 under autocast too: tests/test_nn_autocast.py.)"""
    model, x, y = multiclass if kind == "multiclass" else binary
    with torch.no_grad():
        assert model(x).dtype == torch.float32
        with _bf16():
            assert (x @ x.mT).dtype == torch.bfloat16  # the ambient autocast is in force
    for method in ("margin", "last_layer"):
        ref = certify.certified_accuracy(model, x, y, eps=[0.1], method=method)
        with _bf16():
            got = certify.certified_accuracy(model, x, y, eps=[0.1], method=method)
        assert got["radii"].dtype == torch.float32, method
        assert torch.equal(got["radii"], ref["radii"]), method
        assert got["certified"] == ref["certified"] and got["clean"] == ref["clean"]
    bound = certify.lipschitz_bound(model)
    with _bf16():
        assert certify.lipschitz_bound(model) == bound
        assert (x @ x.mT).dtype == torch.bfloat16  # and it is restored after


def test_the_attack_checks_the_float32_model_under_autocast(multiclass):
    model, x, y = multiclass
    kw = {"steps": 5, "restarts": 1, "bisection": 2, "deepfool_steps": 5}
    ref = certify.attack_l2(model, x[:8], y[:8], **kw)
    with _bf16():
        got = certify.attack_l2(model, x[:8], y[:8], **kw)
    assert got.x_adv.dtype == torch.float32
    assert torch.equal(got.min_norm, ref.min_norm) and torch.equal(got.x_adv, ref.x_adv)


def test_radius_functions_compute_in_float32_or_better():
    logits = torch.tensor([[3.0, 1.0, 0.5], [0.25, 2.0, 1.5]])
    y = torch.tensor([0, 1])
    w = torch.eye(3, 5)
    for low in (torch.bfloat16, torch.float16):
        lo = logits.to(low)  # these values are exact in both
        r = certify.certified_radius(lo, y)
        assert r.dtype == torch.float32
        assert torch.equal(r, certify.certified_radius(logits, y))
        ll = certify.last_layer_radius(lo, w, y)
        assert ll.dtype == torch.float32
        assert torch.equal(ll, certify.last_layer_radius(logits, w, y))
        assert certify.certified_radius(lo[:, :1]).dtype == torch.float32
    assert certify.certified_radius(logits.double(), y).dtype == torch.float64
    with _bf16():  # cdist and friends are not rounded by an ambient autocast either
        assert torch.equal(certify.last_layer_radius(logits, w, y),
                           certify.last_layer_radius(logits, w, y).float())
    assert torch.allclose(certify.certified_radius(logits, y),
                          torch.tensor([2.0, 0.5]) / SQRT2)


def test_a_low_precision_model_is_refused_and_low_precision_points_upcast(multiclass):
    model, x, y = multiclass
    ref = certify.certified_accuracy(model, x, y, eps=[0.1])
    x_bf16 = x.bfloat16()
    got = certify.certified_accuracy(model, x_bf16, y, eps=[0.1])  # was a dtype mismatch
    assert got["radii"].dtype == torch.float32
    assert torch.equal(got["radii"],
                       certify.certified_accuracy(model, x_bf16.float(), y, eps=[0.1])["radii"])
    half = _multiclass_model().to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"weights are bfloat16.*model\.float\(\)"):
        certify.certified_accuracy(half, x_bf16, y)
    mixed = _multiclass_model()
    mixed[-1].to(torch.float16)  # one low-precision layer is enough to void the bound
    with pytest.raises(ValueError, match=r"weights are float16"):
        certify.certified_accuracy(mixed, x, y)
    assert ref["radii"].dtype == torch.float32
    double = _multiclass_model().double()
    assert certify.certified_accuracy(double, x.double(), y)["radii"].dtype == torch.float64
