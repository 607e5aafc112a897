# SPDX-License-Identifier: MIT
"""Attacks on the claims of ShiftConv2d (LipNeXt's shift block, Hu, Hu, Fredrikson 2026), its
spatial shift and BetaAbs.

Exact Jacobians come from the impulse response in float64: of the float32 eval weights as
applied (``export().double()``), or of the float32 training forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from checks import operator_matrix

from onelip import models
from onelip.cli import main
from onelip.nn import (
    BetaAbs,
    LipschitzModule,
    ShiftConv2d,
    SpatialShift,
    module_lipschitz_bound,
)
from onelip.nn.shift import _Shift, shift_permutation, spatial_shift
from onelip.nn.utils import export_tree, retract_

TOL = 1e-5  # σ within 1e-5 of 1, as applied in float32


def _svals(f, shape) -> torch.Tensor:
    with torch.no_grad():
        op = operator_matrix(lambda x: f(x) - f(torch.zeros_like(x)), shape,
                             dtype=torch.float64)
    return torch.linalg.svdvals(op)


def _eval_svals(layer, shape):
    return _svals(export_tree(layer.eval()).double(), shape)


def _train_svals(layer, shape):
    layer.train()
    return _svals(lambda x: layer(x.float()).double(), shape)


def _trained(layer, shape, steps: int = 8, seed: int = 0):
    """Adam steps (lr 2e-2) on an objective that pushes the output norm up, each followed by
    ``retract_`` as ``fit`` does."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(layer.parameters(), lr=2e-2)
    layer.train()
    for _ in range(steps):
        x = torch.randn(4, *shape, generator=g)
        loss = -layer(x).square().sum() + layer(x).abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        retract_(layer)
    return layer


# (C_in, C_out, stride, H): the block is an isometry (C_out ≥ C_in s²), or a co-isometry
# (C_out < C_in s², s divides H): its non-zero singular values are all 1.
EXACT = [(8, 8, 1, 6), (4, 6, 1, 5), (6, 4, 1, 5), (4, 8, 2, 6), (4, 16, 2, 6), (3, 5, 2, 6)]


@pytest.mark.parametrize("c_in,c_out,s,h", EXACT)
def test_block_is_orthogonal_in_eval_and_train_after_adam(c_in, c_out, s, h):
    torch.manual_seed(c_in + c_out + s)
    shape = (c_in, h, h)
    layer = ShiftConv2d(c_in, c_out, 3, stride=s, input_size=(h, h))
    rank = min(c_in * h * h, c_out * (h // s) ** 2)
    for stage in ("init", "trained"):
        if stage == "trained":
            _trained(layer, shape)
        for sv in (_eval_svals(layer, shape), _train_svals(layer, shape)):
            assert float(sv[0]) <= 1 + TOL, (stage, float(sv[0]))
            assert float(sv[rank - 1]) >= 1 - TOL, (stage, float(sv[rank - 1]))
        assert float(_eval_svals(layer, shape)[0]) <= 1  # eval: certified, no tolerance


def test_odd_input_with_stride_is_a_contraction():
    """Zero padding to a multiple of the stride, then fewer output channels: ≤ 1 (not all
    singular values 1: the padded positions are projected out)."""
    layer = _trained(ShiftConv2d(3, 5, 3, stride=2, input_size=(5, 5)), (3, 5, 5))
    assert float(_eval_svals(layer, (3, 5, 5))[0]) <= 1
    assert float(_train_svals(layer, (3, 5, 5))[0]) <= 1 + TOL
    assert layer.eval()(torch.randn(2, 3, 5, 5)).shape == (2, 5, 3, 3)


def test_the_shift_alone_is_a_permutation():
    shape = (10, 4, 5)
    for g in (1, 2):
        jac = operator_matrix(lambda x: spatial_shift(x, g), shape, dtype=torch.float64)
        assert bool(((jac == 0) | (jac == 1)).all())
        assert bool((jac.sum(0) == 1).all()) and bool((jac.sum(1) == 1).all())
        moved = (jac.diagonal() == 0).sum()
        assert int(moved) == 4 * g * 4 * 5  # the four shifted groups, every pixel moves
        x = torch.randn(2, *shape, dtype=torch.float64, requires_grad=True)
        perm = shift_permutation(*shape, g)
        assert torch.equal(_Shift.apply(x, *perm), spatial_shift(x, g))
        gy = torch.randn(2, *shape, dtype=torch.float64)
        a, = torch.autograd.grad(_Shift.apply(x, *perm), x, gy)
        b, = torch.autograd.grad(spatial_shift(x, g), x, gy)
        assert torch.equal(a, b)  # the backward is the inverse permutation


def test_retraction_keeps_the_latents_orthogonal():
    layer = _trained(ShiftConv2d(16, 16, 3, input_size=(6, 6)), (16, 6, 6), steps=20)
    eye = torch.eye(16, dtype=torch.float64)
    for p in (layer.rotation, layer.mixing):
        x = p.detach().double()
        assert float(torch.linalg.matrix_norm(x.mT @ x - eye, ord=2)) < 1e-6


def test_position_embedding_is_a_constant_shift():
    layer = ShiftConv2d(8, 8, 3, input_size=(4, 4))
    with torch.no_grad():
        layer.pos.normal_()
    layer.eval()
    x, y = torch.randn(2, 8, 4, 4, dtype=torch.float64).unbind(0)
    plain = export_tree(layer).double()
    d = plain(x[None]) - plain(y[None])
    assert torch.isclose(d.norm(), (x - y).norm(), rtol=1e-5)
    with torch.no_grad():
        assert float(plain(torch.zeros(1, 8, 4, 4, dtype=torch.float64)).abs().max()) > 0.1
    with pytest.raises(ValueError, match="position embedding"):
        layer(torch.randn(1, 8, 5, 5))
    free = ShiftConv2d(8, 8, 3, input_size=(4, 4), position_embedding=False).eval()
    assert free(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)  # any size without p


def test_kernel_size_one_is_an_orthogonal_1x1():
    layer = ShiftConv2d(6, 6, 1, input_size=(3, 3))
    assert layer.group == 0
    plain = export_tree(layer.eval())
    assert not any(isinstance(m, SpatialShift) for m in plain.modules())
    sv = _eval_svals(layer, (6, 3, 3))
    assert float(sv[0]) <= 1 and float(sv[-1]) >= 1 - TOL


def test_alpha_sets_the_shifted_groups():
    assert ShiftConv2d(64, 64, input_size=(4, 4)).group == 8
    assert ShiftConv2d(64, 64, input_size=(4, 4), alpha=1 / 16).group == 4
    assert ShiftConv2d(4, 4, input_size=(4, 4), alpha=1 / 16).group == 1
    assert ShiftConv2d(3, 3, input_size=(4, 4)).group == 0  # fewer than 4 channels
    with pytest.raises(ValueError, match="alpha"):
        ShiftConv2d(8, 8, input_size=(4, 4), alpha=0.3)
    with pytest.raises(ValueError, match="kernel_size"):
        ShiftConv2d(8, 8, 5, input_size=(4, 4))


def test_export_is_plain_1x1_convs_and_a_shift_and_cached():
    layer = _trained(ShiftConv2d(4, 8, 3, stride=2, input_size=(5, 5)), (4, 5, 5)).eval()
    plain = layer.export()
    kinds = [type(m).__name__ for m in plain]
    assert kinds == ["ZeroPad2d", "PixelUnshuffle", "Conv2d", "PositionBias", "SpatialShift",
                     "Conv2d"]
    assert all(m.kernel_size == (1, 1) for m in plain if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(plain(x), layer(x), atol=1e-6)
    assert layer.eval_weight() is layer.eval_weight()  # cached
    assert not any(isinstance(m, LipschitzModule) for m in plain.modules())


def test_plain_safetensors_round_trip(tmp_path):
    from onelip.export.plain_file import load_plain, save_plain

    net = models.lipconvnet(models.LipConvNetConfig(layer="shift", width=4, blocks=2, depth=1,
                                                    input_shape=(3, 8, 8))).eval()
    path = save_plain(net, tmp_path / "shift.safetensors")
    back = load_plain(path)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(back(x), net(x), atol=1e-6)


def test_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from onelip.export import onnx_max_error, to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(_trained(ShiftConv2d(2, 8, 3, input_size=(7, 7)), (2, 7, 7)),
                              BetaAbs(0.5),
                              ShiftConv2d(8, 6, 3, stride=2, input_size=(7, 7))).eval()
    path = to_onnx(net, tmp_path / "shift.onnx", input_shape=(2, 7, 7))
    assert onnx_max_error(net, path, torch.randn(3, 2, 7, 7)) <= 1e-5


def test_beta_abs_is_norm_preserving():
    x = torch.randn(3, 6, 2, 2, dtype=torch.float64)
    y = BetaAbs(0.5)(x)
    assert torch.equal(y[:, :3], x[:, :3].abs()) and torch.equal(y[:, 3:], x[:, 3:])
    assert torch.allclose(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
    jac = torch.autograd.functional.jacobian(BetaAbs(0.5), x[:1])
    assert bool((jac.reshape(24, 24).abs() == torch.eye(24, dtype=torch.float64)).all())
    assert torch.equal(BetaAbs(0.0)(x), x) and torch.equal(BetaAbs(1.0)(x), x.abs())
    assert torch.equal(BetaAbs(0.5)(x[:, :, 0, 0]), y[:, :, 0, 0])  # dense (N, C) too
    with pytest.raises(ValueError, match="beta"):
        BetaAbs(1.5)


def _step_certify_export(net, x):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss = TF.cross_entropy(net(x), torch.randint(0, 10, (x.shape[0],)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    retract_(net)
    net.eval()
    assert module_lipschitz_bound(net) <= 1.0
    assert torch.allclose(export_tree(net)(x), net(x), atol=1e-6)


def test_in_lipconvnet_convnet_and_lipresnet():
    x = torch.randn(4, 3, 8, 8)
    _step_certify_export(models.lipconvnet(models.LipConvNetConfig(
        layer="shift", width=4, blocks=2, depth=1, input_shape=(3, 8, 8),
        activation="betaabs")), x)
    net = models.convnet(models.ConvNetConfig(layer="shift", width=4, input_shape=(3, 7, 7)))
    assert any(isinstance(m, ShiftConv2d) and m.stride[0] == 2 for m in net.modules())
    _step_certify_export(net, torch.randn(4, 3, 7, 7))
    _step_certify_export(models.lipresnet(models.LipResNetConfig(
        layer="shift", width=4, blocks=(1, 1), block="convex", input_shape=(3, 8, 8))), x)


def test_cli_set_layer_shift(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "convnet", "--set", "layer=shift",
                 "--set", "width=4", "--set", "stages=2", "--set", "depth=1", "--set",
                 "activation=betaabs", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    assert main(["certify", str(out), "--eps", "0.1"]) == 0
    assert "L ≤ 1.0000" in capsys.readouterr().out
