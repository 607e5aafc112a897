# SPDX-License-Identifier: MIT
"""``onelip.train``: fit's own random generator (no global reseed) and evaluate_accuracy's
modes and labels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import onelip.nn as onn
from onelip import losses
from onelip.data import DataSplit
from onelip.train import TrainConfig, evaluate_accuracy, fit


def _data(n: int = 96) -> DataSplit:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return DataSplit("toy", x[: n // 2], y[: n // 2], x[n // 2:], y[n // 2:], 1, (4,))


def _model() -> nn.Module:
    return onn.Sequential(onn.OrthoLinear(4, 8), onn.MaxMin(), onn.FrobeniusLinear(8, 1))


def _fit(model: nn.Module, seed: int, epochs: int = 2) -> nn.Module:
    fit(model, _data(), losses.HKRLoss(alpha=5.0, margin=0.1),
        TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, seed=seed), progress=False)
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    model = _model()
    torch.rand(3)  # the global stream somewhere in the middle
    state = torch.get_rng_state()
    _fit(model, seed=7)
    assert torch.equal(torch.get_rng_state(), state), "fit reseeded or drew from the global RNG"


def test_fit_is_reproducible_from_its_seed_whatever_the_global_rng():
    torch.manual_seed(0)
    init = _model()
    torch.manual_seed(1)
    a = _fit(copy.deepcopy(init), seed=3)
    torch.manual_seed(2)  # another global state: no effect on the result
    torch.rand(5)
    b = _fit(copy.deepcopy(init), seed=3)
    assert _same(a, b)
    c = _fit(copy.deepcopy(init), seed=4)  # another data order, other weights
    assert not _same(a, c)


def test_evaluate_accuracy_restores_each_mode_even_on_error():
    model = onn.Sequential(onn.OrthoLinear(4, 8), onn.MaxMin(), onn.FrobeniusLinear(8, 1))
    model.train()
    model[2].eval()
    d = _data()
    evaluate_accuracy(model, d.x_test, d.y_test)
    assert model.training and model[0].training and not model[2].training

    class Boom(nn.Module):
        def forward(self, x):
            if not self.training:
                raise RuntimeError("boom")
            return x

    broken = nn.Sequential(nn.Linear(4, 1), Boom()).train()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate_accuracy(broken, d.x_test, d.y_test)
    assert all(m.training for m in broken.modules()), "mode not restored after an error"


def test_evaluate_accuracy_binary_labels_in_both_encodings():
    d = _data()
    model = _fit(_model(), seed=0, epochs=20)
    acc01 = evaluate_accuracy(model, d.x_test, d.y_test)
    assert acc01 > 0.8  # both classes are mostly right: −1 labels must count when right
    assert evaluate_accuracy(model, d.x_test, 2 * d.y_test - 1) == acc01  # ±1 labels
    with pytest.raises(ValueError, match="binary labels"):
        evaluate_accuracy(model, d.x_test, d.y_test + 1)  # {1, 2}
