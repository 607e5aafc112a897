# SPDX-License-Identifier: MIT
"""BROConv2d / BROLinear: per-frequency block reflectors (σ, Proposition 1's −1 eigenvalues),
the cast margin as applied, real outputs, the pad-then-crop operator within 1 (train and
eval, after Adam steps), the fixed input size, odd sizes, the exact spatial export and ONNX,
and the family in the models and the CLI."""

from __future__ import annotations

import pytest
import torch
from checks import operator_matrix

from onelip import certify, models
from onelip.functional import bro_factor
from onelip.models.lipconvnet import LipConvNetConfig, lipconvnet
from onelip.nn import BROConv2d, BROLinear
from onelip.nn.utils import export_tree

TOL_TRAIN = 1e-5  # float32 FFTs and complex64 products of the training forward


def _sigmas(f, shape):
    return torch.linalg.svdvals(operator_matrix(f, shape, dtype=torch.float64))


def _pushed(layer, shape, steps=6, lr=0.05):
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    layer.train()
    for i in range(steps):
        x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(i))
        loss = -layer(x).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return layer


def _symbol64(layer):
    """Ŵ(ω) (F, C, C) in complex128 from the float64 factor."""
    y = layer._factor(layer.weight.detach())
    eye = torch.eye(y.shape[-2], dtype=y.dtype)
    return eye - 2 * y @ y.mH


@pytest.mark.parametrize("trained", [False, True])
def test_per_frequency_reflectors(trained):
    torch.manual_seed(0)
    layer = BROConv2d(8, 8, 3, input_size=(6, 7))
    if trained:
        _pushed(layer, (8, 6, 7))
    w = _symbol64(layer)
    s = torch.linalg.svdvals(w)
    assert float(s.max()) <= 1 + 1e-12 and float(s.min()) >= 1 - 1e-3, (s.max(), s.min())
    # Proposition 1: Hermitian, exactly r eigenvalues near −1 and C − r near +1
    assert torch.allclose(w, w.mH, atol=1e-12)
    ev = torch.linalg.eigvalsh(w)  # (F, C)
    r = layer.weight.shape[1]
    assert bool(((ev < -0.99).sum(-1) == r).all()) and bool(((ev > 0.99).sum(-1) == 8 - r).all())
    # as applied: the training factor in complex64 (float32) and the cached eval block
    y32 = layer.train_weight().detach().to(torch.complex128)
    w32 = torch.eye(8, dtype=torch.complex128) - 2 * y32 @ y32.mH
    assert float(torch.linalg.matrix_norm(w32, ord=2).max()) <= 1 + 1e-6
    cached = torch.view_as_complex(layer.eval().eval_weight().contiguous()).to(torch.complex128)
    assert float(torch.linalg.matrix_norm(cached, ord=2).max()) <= 1  # the cast margin


def test_output_is_real():
    """The full-spectrum product (both halves, from an fft2 of V) has an imaginary residue
    below 1e-6 and its real part is the layer's output (irfft2 of the half spectrum)."""
    torch.manual_seed(1)
    layer = _pushed(BROConv2d(4, 4, 3, input_size=(5, 6), bias=False), (4, 5, 6)).eval()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    vf = torch.fft.fft2(layer.weight.detach().double(), s=layer.grid).permute(2, 3, 0, 1)
    y = bro_factor(vf, eps=layer.eps)
    w = torch.eye(4, dtype=y.dtype) - 2 * y @ y.mH  # (G_h, G_w, C, C)
    xf = torch.fft.fft2(torch.nn.functional.pad(x, (1, 1, 1, 1)))
    out = torch.fft.ifft2(torch.einsum("hwoc,nchw->nohw", w, xf))[..., 1:-1, 1:-1]
    assert float(out.imag.abs().max()) < 1e-6
    assert torch.allclose(out.real.float(), layer(x.float()), atol=1e-5)


CASES = [  # (C_in, C_out, stride, padding_mode, (H, W))
    (6, 6, 1, "zeros", (8, 8)),
    (6, 6, 1, "circular", (7, 8)),
    (3, 5, 1, "zeros", (5, 7)),
    (5, 3, 1, "zeros", (6, 6)),
    (2, 6, 2, "zeros", (7, 8)),
    (4, 3, 2, "circular", (6, 5)),
]


@pytest.mark.parametrize("c_in,c_out,stride,padding_mode,size", CASES)
def test_operator_within_one_train_and_eval(c_in, c_out, stride, padding_mode, size):
    torch.manual_seed(2)
    layer = BROConv2d(c_in, c_out, 3, stride=stride, padding_mode=padding_mode,
                      input_size=size)
    shape = (c_in, *size)
    for when in ("init", "trained"):
        if when == "trained":
            _pushed(layer, shape)
        layer.train()
        train = _sigmas(lambda x: layer(x.float()).double(), shape)
        assert float(train.max()) <= 1 + TOL_TRAIN, (when, float(train.max()))
        layer.eval()
        ev = _sigmas(lambda x: layer(x.float()).double(), shape)  # the FFT forward, float32
        assert float(ev.max()) <= 1 + 1e-6, (when, float(ev.max()))
        exact = _sigmas(export_tree(layer).double(), shape)  # spatial form, float64
        assert float(exact.max()) <= layer.lipschitz_bound(), (when, float(exact.max()))
        x = torch.randn(3, *shape)
        assert torch.allclose(export_tree(layer)(x), layer(x), atol=1e-5, rtol=1e-5)


def test_circular_square_is_orthogonal():
    torch.manual_seed(3)
    layer = BROConv2d(6, 6, 3, input_size=(6, 6), padding_mode="circular").eval()
    s = _sigmas(export_tree(layer).double(), (6, 6, 6))
    assert float(s.min()) >= 1 - 1e-4 and float(s.max()) <= 1, (s.min(), s.max())


def test_wrong_input_size_raises():
    layer = BROConv2d(2, 2, 3, input_size=(8, 8))
    with pytest.raises(ValueError, match=r"built for inputs of size \(8, 8\).*input_size=\(6, 8\)"):
        layer(torch.randn(1, 2, 6, 8))


@pytest.mark.parametrize("shape", [(5, 5), (6, 4), (4, 7)])
def test_dense(shape):
    torch.manual_seed(4)
    lin = _pushed(BROLinear(*shape), (shape[0],), lr=0.02).eval()
    w = export_tree(lin).weight.detach().double()
    s = torch.linalg.svdvals(w)
    assert float(s.max()) <= 1
    if shape[0] == shape[1]:
        assert float(s.min()) >= 1 - 1e-6, float(s.min())
        eig = torch.linalg.eigvalsh(w)  # symmetric: r eigenvalues −1
        assert int((eig < 0).sum()) == lin.weight.shape[1]
    lin.train()
    w_train = lin.train_weight().detach().double()
    assert float(torch.linalg.matrix_norm(w_train, ord=2)) <= 1 + 1e-6


def test_onnx_matches(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from onelip.export.onnx import onnx_max_error, to_onnx

    torch.manual_seed(5)
    net = torch.nn.Sequential(BROConv2d(3, 6, 3, stride=2, input_size=(7, 8)),
                              BROConv2d(6, 6, 3, input_size=(4, 4)))
    _pushed(net, (3, 7, 8), steps=2)
    net.eval()
    path = to_onnx(net, tmp_path / "bro.onnx", input_shape=(3, 7, 8))
    assert onnx_max_error(net, path, torch.randn(2, 3, 7, 8)) <= 1e-5


@pytest.mark.parametrize("name", ["lipconvnet", "convnet", "lipresnet"])
def test_models_train_certify_export(name):
    torch.manual_seed(6)
    if name == "lipconvnet":
        net = lipconvnet(LipConvNetConfig(layer="bro", width=4, blocks=2, depth=1,
                                          input_shape=(3, 8, 8)))
    else:
        net, _ = models.build(name, input_shape=(3, 8, 8), num_outputs=3, layer="bro",
                              width=4)
        assert any(isinstance(m, BROConv2d) and m.stride[0] == 2 and m.in_channels !=
                   m.out_channels for m in net.modules())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(4, 3, 8, 8)
    net(x).square().mean().backward()
    opt.step()
    net.eval()
    assert certify.lipschitz_bound(net) == 1.0
    plain = export_tree(net)
    assert torch.allclose(plain(x), net(x), atol=1e-5)
    assert not any(isinstance(m, BROConv2d) for m in plain.modules())
