# SPDX-License-Identifier: MIT
"""Attacks on the claims of AOLLinear and AOLConv2d (Prach & Lampert 2022).

Exact operators come from the impulse response in float64 (of the float64 layer, or of the
float32 eval weight as applied); the scales are checked against the row sums of the explicit
Gram matrix of the operator."""

from __future__ import annotations

import pytest
import torch
from checks import operator_matrix

from onelip import models
from onelip.nn import AOLConv2d, AOLLinear, module_lipschitz_bound
from onelip.nn.aol import aol_conv_gram, aol_scale
from onelip.nn.utils import eval_mode, export_tree

TOL_F64 = 1e-12  # float64 layer: rounding of the conv and the SVD only
TOL_F32 = 1e-6  # float32 eval weight as applied (the cast margin makes it ≤ 1 exactly)
TOL_TIGHT = 1e-5  # Dirac init on circular padding: σ = (1 + ε)^{-1/2}, ε = 1e-6

GRID = [  # (C_in, C_out, k, stride, padding_mode)
    (c_in, c_out, k, s, mode)
    for (c_in, c_out) in ((3, 5), (5, 2))
    for k in (1, 3)
    for s in (1, 2)
    for mode in ("zeros", "circular")
]


def _sigma(layer, shape) -> float:
    with torch.no_grad():
        op = operator_matrix(lambda x: layer(x) - layer(torch.zeros_like(x)), shape,
                             dtype=torch.float64)
    return float(torch.linalg.matrix_norm(op, ord=2))


def _random(layer, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


@pytest.mark.parametrize("c_in,c_out,k,s,mode", GRID)
def test_random_kernel_is_within_one(c_in, c_out, k, s, mode):
    """Random (non-orthogonal) kernels: σ_max ≤ 1 in float64 (train and eval) and for the
    float32 eval weight as applied; learnable q (random) too."""
    for learnable_q in (False, True):
        layer = AOLConv2d(c_in, c_out, k, stride=s, padding_mode=mode,
                          learnable_q=learnable_q)
        _random(layer, seed=k + 3 * s)
        shape = (c_in, 6, 6)
        f64 = layer.double()
        assert _sigma(f64.train(), shape) <= 1 + TOL_F64
        assert _sigma(f64.eval(), shape) <= 1 + TOL_F64
        f32 = _random(AOLConv2d(c_in, c_out, k, stride=s, padding_mode=mode,
                                learnable_q=learnable_q), seed=k + 3 * s).eval()
        plain = export_tree(f32).double()  # the float32 weight as applied, exact arithmetic
        sigma = _sigma(plain, shape)
        assert sigma <= 1 + TOL_F32 and sigma > 0.05  # not vacuous


@pytest.mark.parametrize("c_in,c_out,k", [(3, 4, 3), (4, 2, 3), (2, 2, 5), (3, 3, 1)])
def test_scales_are_the_row_sums_of_the_explicit_gram(c_in, c_out, k):
    """On a circular grid of n ≥ 2k−1 the Gram JᵀJ of the unscaled convolution has, in every
    row of input channel c, the absolute row sum t_c (no aliasing): the theorem's diagonal,
    computed from the explicit Jacobian, equals the layer's; with stride 2 (rows of J
    dropped) the row sums are ≤ t_c."""
    n = max(2 * k - 1, 4)
    torch.manual_seed(0)
    kernel = torch.randn(c_out, c_in, k, k, dtype=torch.float64)
    for s in (1, 2):
        layer = AOLConv2d(c_in, c_out, k, stride=s, padding_mode="circular",
                          bias=False).double()
        with torch.no_grad():
            layer.weight.copy_(kernel)
        conv = torch.nn.Conv2d(c_in, c_out, k, stride=s, padding=(k - 1) // 2,
                               padding_mode="circular", bias=False).double()
        with torch.no_grad():
            conv.weight.copy_(kernel)
            jac = operator_matrix(conv, (c_in, n, n), dtype=torch.float64)
        rows = (jac.mT @ jac).abs().sum(1).reshape(c_in, n * n)  # (C_in, pixels)
        t = aol_scale(aol_conv_gram(kernel), eps=0.0) ** -2  # (C_in,)
        if s == 1:
            assert torch.allclose(rows, t[:, None].expand_as(rows), rtol=1e-12)
        else:
            assert bool((rows <= t[:, None] * (1 + 1e-12)).all())
        with torch.no_grad():
            d = layer.scale()
        assert torch.allclose(d, (t + 1e-6).rsqrt(), rtol=1e-14)


def test_zero_padding_rows_are_dominated():
    """Zero padding: the row sums of |JᵀJ| are ≤ t_c (a compression of the infinite
    convolution), with equality at interior pixels."""
    torch.manual_seed(1)
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(kernel)
        jac = operator_matrix(conv, (2, 7, 7), dtype=torch.float64)
    rows = (jac.mT @ jac).abs().sum(1).reshape(2, 7, 7)
    t = aol_scale(aol_conv_gram(kernel), eps=0.0) ** -2
    assert bool((rows <= t[:, None, None] * (1 + 1e-12)).all())
    assert torch.allclose(rows[:, 3, 3], t, rtol=1e-12)


@pytest.mark.parametrize("c_in,c_out,k", [(4, 4, 3), (3, 6, 3), (4, 4, 1)])
def test_dirac_init_is_orthogonal_on_circular_padding(c_in, c_out, k):
    layer = AOLConv2d(c_in, c_out, k, padding_mode="circular").eval()
    plain = export_tree(layer).double()
    with torch.no_grad():
        op = operator_matrix(lambda x: plain(x) - plain(torch.zeros_like(x)), (c_in, 6, 6),
                             dtype=torch.float64)
    sv = torch.linalg.svdvals(op)
    assert float(sv.max()) <= 1 + TOL_F32
    assert float(sv.min()) >= 1 - TOL_TIGHT


def test_orthogonal_centre_for_fewer_outputs_is_within_one():
    layer = AOLConv2d(6, 3, 3).eval()
    assert 0.3 < _sigma(export_tree(layer).double(), (6, 6, 6)) <= 1 + TOL_F32


def test_adam_steps_keep_the_bound():
    """After Adam steps that push the norm up: train (float64) and eval (as applied) ≤ 1."""
    torch.manual_seed(0)
    layer = AOLConv2d(3, 4, 3, stride=2, learnable_q=True)
    opt = torch.optim.Adam(layer.parameters(), lr=5e-2)
    for _ in range(20):
        loss = -layer(torch.randn(4, 3, 8, 8)).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(layer.log_q.detach().abs().max()) > 0  # q moved
    with eval_mode(layer):
        assert _sigma(export_tree(layer).double(), (3, 8, 8)) <= 1 + TOL_F32
    layer64 = layer.double().train()
    assert _sigma(layer64, (3, 8, 8)) <= 1 + TOL_F64


def test_zero_kernel_is_finite():
    layer = AOLConv2d(2, 2, 3)
    with torch.no_grad():
        layer.weight.zero_()
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    layer(x).sum().backward()
    assert bool(torch.isfinite(layer.weight.grad).all())
    assert torch.equal(layer.eval()(x), layer.bias.view(1, -1, 1, 1).expand(2, 2, 5, 5))


def test_dense_random_within_one_and_orthogonal_init_tight():
    torch.manual_seed(0)
    for n_in, n_out in ((6, 4), (4, 6)):
        lin = _random(AOLLinear(n_in, n_out, learnable_q=True))
        w = lin.double().train().train_weight().detach()
        assert float(torch.linalg.matrix_norm(w, ord=2)) <= 1 + TOL_F64
        lin32 = _random(AOLLinear(n_in, n_out)).eval()
        sv = torch.linalg.svdvals(lin32.export().weight.double())
        assert float(sv.max()) <= 1
    sv = torch.linalg.svdvals(AOLLinear(3, 5).eval().export().weight.double())
    assert float(sv.min()) >= 1 - TOL_TIGHT


def test_eval_weight_is_one_plain_conv_and_cached():
    layer = AOLConv2d(4, 4, 3).eval()
    plain = layer.export()
    assert type(plain) is torch.nn.Conv2d
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(plain(x), layer(x))
    assert layer.eval_weight() is layer.eval_weight()  # cached


def test_in_lipconvnet_trains_certifies_and_exports():
    cfg = models.LipConvNetConfig(layer="aol", width=4, blocks=2, depth=1,
                                  input_shape=(3, 8, 8))
    net = models.lipconvnet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    net.eval()
    assert module_lipschitz_bound(net) <= 1.0
    plain = export_tree(net)
    assert torch.allclose(plain(x), net(x), atol=1e-6)


@pytest.mark.parametrize("name", ["convnet", "lipresnet"])
def test_in_models_with_stride_and_channel_changes(name):
    cfg_cls = {"convnet": models.ConvNetConfig, "lipresnet": models.LipResNetConfig}[name]
    net = getattr(models, name)(cfg_cls(layer="aol", width=4, input_shape=(3, 8, 8)))
    x = torch.randn(2, 3, 8, 8)
    net(x).sum().backward()
    assert any(isinstance(m, AOLConv2d) and m.stride[0] == 2 for m in net.modules()) or \
        name == "lipresnet"
    net.eval()
    assert torch.allclose(export_tree(net)(x), net(x), atol=1e-6)


def test_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from onelip.export import onnx_max_error, to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(_random(AOLConv2d(2, 3, 3, padding_mode="circular")),
                              _random(AOLConv2d(3, 4, 3, stride=2))).eval()
    path = to_onnx(net, tmp_path / "aol.onnx", input_shape=(2, 8, 8))
    assert onnx_max_error(net, path, torch.randn(3, 2, 8, 8)) <= 1e-5
