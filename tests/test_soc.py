# SPDX-License-Identifier: MIT
"""SOCConv2d: the skew-symmetric Jacobian, the certified truncation (train and eval), the
rigorous series bound, tightness, the reference's unsound training rule (negative control),
export/ONNX, and the family in the models and the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from checks import operator_matrix

from onelip import certify, models
from onelip.functional import (
    conv2d_symbol,
    exp_series_max,
    skew_conv_kernel,
    skew_conv_norm_bound,
    skew_exp_series,
)
from onelip.models.lipconvnet import LipConvNetConfig, lipconvnet
from onelip.nn import SOCConv2d
from onelip.nn.utils import export_tree

TOL_EVAL = 1e-9  # eval bound certified for the float32 kernel: float64 arithmetic on it
TOL_TRAIN = 1e-5  # training forward: float32 SVD of the bound, float32 rounding of L


def _sigmas(f, shape):
    """Singular values of the affine map f (float64 impulse response)."""
    return torch.linalg.svdvals(operator_matrix(f, shape, dtype=torch.float64))


def _pushed(layer, shape, steps=6, lr=0.05):
    """Adam steps on an objective that pushes the output norm up."""
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    layer.train()
    for i in range(steps):
        x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(i))
        loss = -layer(x).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return layer


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_skew_kernel_has_a_skew_jacobian(padding_mode):
    torch.manual_seed(0)
    kernel = skew_conv_kernel(torch.randn(4, 4, 3, 3, dtype=torch.float64))

    def conv(x):
        if padding_mode == "circular":
            return TF.conv2d(TF.pad(x, (1, 1, 1, 1), mode="circular"), kernel)
        return TF.conv2d(x, kernel, padding=1)

    jac = operator_matrix(conv, (4, 5, 6), dtype=torch.float64)
    assert float((jac + jac.T).abs().max()) == 0.0
    # the certified bound is above the exact norm (the float64 operator on 5×6 inputs)
    bound = float(skew_conv_norm_bound(kernel))
    assert float(torch.linalg.matrix_norm(jac, ord=2)) <= bound


@pytest.mark.parametrize("rho", [1.0, 1.6, 2.1, 3.0])
def test_series_bound_is_rigorous_and_tight(rho):
    theta = torch.linspace(0, rho, 200_001, dtype=torch.float64)
    for terms in (4, 5, 6, 12):
        z = 1j * theta.to(torch.complex128)
        s = sum(z ** i / math.factorial(i) for i in range(terms + 1)).abs()
        m = exp_series_max(terms, rho)
        assert float(s.max()) <= m + 1e-12, (terms, rho, float(s.max()), m)  # float64 sum
        assert m <= max(1.0, float(s.max())) * (1 + 2e-5), (terms, rho, m)  # tight
    # the published facts: K = 5 peaks at 1.00474 (θ ≈ 1.59); K = 12 ≤ 1 below 3.379;
    # K = 4 ≤ 1 exactly up to 2√2 (|S_4(iθ)|² = 1 − θ⁶/72 + θ⁸/576)
    assert exp_series_max(5, 1.6) == pytest.approx(1.004741, abs=2e-6)
    assert exp_series_max(12, rho) == 1.0
    assert exp_series_max(4, 2.82) == 1.0 and exp_series_max(4, 2.84) > 1
    assert exp_series_max(12, 3.39) > 1


CASES = [  # (C_in, C_out, stride, padding_mode, (H, W))
    (8, 8, 1, "zeros", (8, 8)),
    (8, 8, 1, "circular", (8, 8)),
    (3, 5, 1, "zeros", (6, 7)),
    (5, 3, 1, "circular", (6, 6)),
    (2, 6, 2, "zeros", (7, 8)),
    (4, 3, 2, "circular", (6, 6)),
]


@pytest.mark.parametrize("c_in,c_out,stride,padding_mode,size", CASES)
def test_sigma_max_within_bound_train_and_eval(c_in, c_out, stride, padding_mode, size):
    torch.manual_seed(1)
    layer = SOCConv2d(c_in, c_out, 3, stride=stride, padding_mode=padding_mode)
    shape = (c_in, *size)
    for when in ("init", "trained"):
        if when == "trained":
            _pushed(layer, shape)
        layer.train()
        train = _sigmas(lambda x: layer.double()(x), shape)
        layer.float()
        assert float(train.max()) <= 1 + TOL_TRAIN, (when, float(train.max()))
        layer.eval()
        plain = export_tree(layer).double()  # exact arithmetic on the float32 kernel
        ev = _sigmas(plain, shape)
        assert float(ev.max()) <= layer.lipschitz_bound() * (1 + TOL_EVAL), (when,
                                                                            float(ev.max()))
        x = torch.randn(3, *shape)
        assert torch.allclose(export_tree(layer)(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("terms", [5, 6])
def test_training_with_terms_that_exceed_one_is_corrected(terms):
    """K = 5, 6 exceed 1 near θ ≈ 1.6: the training series is divided by m_K."""
    torch.manual_seed(6)
    layer = _pushed(SOCConv2d(8, 8, 3, padding_mode="circular", train_terms=terms),
                    (8, 6, 6))
    assert layer.train_scale < 1
    s = _sigmas(lambda x: layer.double()(x), (8, 6, 6))
    assert float(s.max()) <= 1 + TOL_TRAIN, float(s.max())


@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_eval_is_orthogonal_with_twelve_terms(padding_mode):
    """Square, stride 1: the Jacobian is skew for both paddings, and 12 terms reach the
    exponential to ρ¹³/13! (ρ ≤ 2.5), so every singular value is 1 to 1e-5."""
    torch.manual_seed(2)
    layer = _pushed(SOCConv2d(6, 6, 3, padding_mode=padding_mode), (6, 6, 6)).eval()
    s = _sigmas(export_tree(layer).double(), (6, 6, 6))
    assert float(s.min()) >= 1 - 1e-5 and float(s.max()) <= 1 + 1e-9, (s.min(), s.max())
    # training mode (4 terms) contracts the top of the spectrum: |S_4(iθ)| ≥ |S_4(2.5i)| = 0.5
    layer.train()
    t = _sigmas(lambda x: layer.double()(x), (6, 6, 6))
    assert float(t.min()) >= 0.5 and float(t.max()) <= 1 + TOL_TRAIN


def test_negative_control_reference_training_rule_exceeds_one():
    """The reference's training rule: 5 terms, ‖L‖ ≈ 1.6, no correction. On an 8-channel
    8×8 circular convolution (whose norm is exactly the largest symbol norm on the 8×8 DFT
    grid) the truncated series reaches σ_max ≈ 1.0047 > 1; the layer's own rule (÷ m_5)
    stays ≤ 1 on the same kernel."""
    torch.manual_seed(3)
    skew = skew_conv_kernel(torch.randn(8, 8, 3, 3, dtype=torch.float64))
    norm = torch.linalg.matrix_norm(conv2d_symbol(skew, (8, 8)), ord=2).amax()
    kernel = skew * (1.6 / norm)

    def series(x, scale=1.0):
        return skew_exp_series(x, kernel, terms=5, scale=scale, padding_mode="circular")

    sigma = float(_sigmas(series, (8, 8, 8)).max())
    assert 1.004 < sigma <= 1.0048, sigma  # measured: 1.00474
    ours = float(_sigmas(lambda x: series(x, 1 / exp_series_max(5, 1.6)), (8, 8, 8)).max())
    assert ours <= 1 + 1e-12, ours


def test_onnx_matches(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from onelip.export.onnx import onnx_max_error, to_onnx

    torch.manual_seed(4)
    net = torch.nn.Sequential(SOCConv2d(3, 6, 3, stride=2), SOCConv2d(6, 6, 3,
                                                                      padding_mode="circular"))
    _pushed(net, (3, 8, 8), steps=2)
    net.eval()
    path = to_onnx(net, tmp_path / "soc.onnx", input_shape=(3, 8, 8))
    assert onnx_max_error(net, path, torch.randn(2, 3, 8, 8)) <= 1e-5


@pytest.mark.parametrize("name", ["lipconvnet", "convnet", "lipresnet"])
def test_models_train_certify_export(name):
    torch.manual_seed(5)
    if name == "lipconvnet":
        net = lipconvnet(LipConvNetConfig(layer="soc", width=4, blocks=2, depth=1,
                                          input_shape=(3, 8, 8)))
    else:
        net, _ = models.build(name, input_shape=(3, 8, 8), num_outputs=3, layer="soc",
                              width=4)
        assert any(isinstance(m, SOCConv2d) and m.stride[0] == 2 and m.in_channels !=
                   m.out_channels for m in net.modules())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(4, 3, 8, 8)
    loss = net(x).square().mean()
    loss.backward()
    opt.step()
    net.eval()
    assert certify.lipschitz_bound(net) == 1.0
    plain = export_tree(net)
    assert torch.allclose(plain(x), net(x), atol=1e-5)
    assert not any(isinstance(m, SOCConv2d) for m in plain.modules())
