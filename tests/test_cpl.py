# SPDX-License-Identifier: MIT
"""Attacks on the claims of CPLLinear and CPLConv2d (convex potential layers with a certified
step size h = 2/β², β ≥ ‖W‖ proven).

Jacobians by autograd in float64 (of the float64 layer, or of the float32 eval weights as
applied through the export), at random points and at D = I (every pre-activation positive:
the Jacobian is I − hWᵀW, whose smallest eigenvalue 1 − h‖W‖² is the one that can leave
[−1, 1]). The negative control is the references' training rule (h from one power-iteration
step), which this layer replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from onelip import models
from onelip.nn import CPLConv2d, CPLLinear, module_lipschitz_bound
from onelip.nn.utils import eval_mode, export_tree

TOL_F64 = 1e-12  # float64 arithmetic (Jacobian and layer)
TOL_F32 = 1e-5  # a float32 training forward: rounding of the convolutions

CONV_CASES = [  # (C_in, C_out, k, stride)
    (4, 4, 3, 1),
    (3, 5, 3, 1),
    (5, 3, 3, 1),
    (4, 4, 1, 1),
    (2, 3, 3, 2),
    (3, 4, 3, 2),
]


def _jac_norm(f, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(lambda t: f(t[None])[0], x)
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()).double(), ord=2))


def _all_positive(layer) -> None:
    """Bias so large that every pre-activation is positive: D = I, the worst case."""
    with torch.no_grad():
        layer.bias.fill_(1e3)


def _points(shape, n=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(n)]


def _sigmas(layer, shape, *, train: bool, dtype=torch.float64) -> list[float]:
    f = layer.train() if train else export_tree(layer.eval()).to(dtype)
    return [_jac_norm(f, x) for x in _points(shape, dtype=dtype)]


def _conv(c_in, c_out, k, s, size=(6, 6), dtype=torch.float32):
    torch.manual_seed(c_in + 10 * c_out + k + s)
    return CPLConv2d(c_in, c_out, k, stride=s, input_size=size).to(dtype)


@pytest.mark.parametrize("c_in,c_out,k,s", CONV_CASES)
def test_conv_jacobian_within_one(c_in, c_out, k, s):
    """Train mode (float64 layer, and float32 as applied) and eval mode (float32 weights and
    h as exported, float64 arithmetic), at random points and at D = I."""
    shape = (c_in, 6, 6)
    for worst in (False, True):
        layer = _conv(c_in, c_out, k, s, dtype=torch.float64)
        if worst:
            _all_positive(layer)
        assert max(_sigmas(layer, shape, train=True)) <= 1 + TOL_F64
        layer32 = _conv(c_in, c_out, k, s)
        if worst:
            _all_positive(layer32)
        assert max(_sigmas(layer32, shape, train=True, dtype=torch.float32)) <= 1 + TOL_F32
        assert max(_sigmas(layer32, shape, train=False)) <= 1 + TOL_F64
    # At D = I the bound is reached (the −1 end of the spectrum: h‖W‖² = 2 up to β's slack).
    sigma = _jac_norm(export_tree(layer32.eval()).double(), _points(shape)[0])
    assert sigma <= 1 + TOL_F64


def test_conv_worst_case_is_tight():
    """At D = I the eigenvalue 1 − h‖T_W‖² is within β's slack of −1: h is not wasteful."""
    layer = _conv(4, 4, 3, 1, size=(8, 8), dtype=torch.float64)
    _all_positive(layer)
    for f in (layer.train(), export_tree(layer.eval())):
        sigma = _jac_norm(f, _points((4, 8, 8))[0])
        assert 1 - 1e-2 <= sigma <= 1 + TOL_F64


def test_after_many_adam_steps_train_and_eval_stay_within_one():
    """80 Adam steps at lr 1e-2 on an objective that pushes the residual branch up; the
    certificate is re-proven at every step (no stale reference)."""
    torch.manual_seed(0)
    layer = CPLConv2d(4, 4, 3, input_size=(6, 6))
    start = float(torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2))
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for i in range(80):
        x = torch.randn(8, 4, 6, 6)
        loss = -(layer(x) - x).square().mean() - layer.weight.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 20 == 19:
            probe = CPLConv2d(4, 4, 3, input_size=(6, 6)).double()
            probe.load_state_dict(layer.state_dict())
            _all_positive(probe)
            assert max(_sigmas(probe, (4, 6, 6), train=True)) <= 1 + TOL_F64
            with eval_mode(layer):
                sig = _sigmas(layer, (4, 6, 6), train=False)
            assert max(sig) <= 1 + TOL_F64
    # the objective did push: the weight's norm at least doubled (from 1, the
    # Dirac-orthogonal start)
    assert float(torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)) > 2 * start


def _one_power_step_h(layer: CPLConv2d, seed: int) -> float:
    """The references' training rule: σ̂ after ONE power-iteration step on the operator from
    a random vector (Meunier et al.'s SpectralNormPowerMethod, 1 iteration), h = 2/σ̂²."""
    g = torch.Generator().manual_seed(seed)
    w, p = layer.weight.detach(), layer.padding
    v = torch.randn(1, layer.channels, *layer.input_size, generator=g, dtype=w.dtype)
    v = v / v.norm()
    u = TF.conv2d(v, w, padding=p)
    u = u / u.norm()
    v = TF.conv_transpose2d(u, w, padding=p)
    v = v / v.norm()
    sigma_hat = float(TF.conv2d(v, w, padding=p).norm())
    return 2 / sigma_hat ** 2


def test_negative_control_power_iteration_h_is_unsound():
    """The same layer with h from one power step from a random vector (the references' rule)
    has a Jacobian far above 1 (LAYERS.md: 5.7); the certified h stays ≤ 1."""
    torch.manual_seed(7)
    layer = CPLConv2d(8, 8, 3, input_size=(8, 8)).double()
    with torch.no_grad():
        layer.weight.normal_()  # ‖T_W‖ ≈ 18
    _all_positive(layer)
    h_ref = _one_power_step_h(layer, seed=3)
    x = _points((8, 8, 8))[0]
    bad = _jac_norm(lambda t: layer._core(layer._adapt_in(t), h_ref), x)
    assert bad > 2.0, bad  # measured 3.13 (‖T_W‖ = 18.6)
    good = _jac_norm(layer.eval(), x)
    assert good <= 1 + TOL_F64


def test_zero_weight_is_the_identity():
    for layer in (CPLConv2d(3, 3, 3, input_size=(5, 5)), CPLLinear(4, 4)):
        with torch.no_grad():
            layer.weight.zero_()
        shape = (2, 3, 5, 5) if isinstance(layer, CPLConv2d) else (2, 4)
        x = torch.randn(shape, requires_grad=True)
        y = layer.train()(x)
        assert torch.equal(y, x)
        y.sum().backward()
        assert bool(torch.isfinite(layer.weight.grad).all())
        assert torch.equal(layer.eval()(x), x)


@pytest.mark.parametrize("n_in,n_out", [(5, 5), (5, 3), (3, 6)])
def test_dense_jacobian_within_one(n_in, n_out):
    for worst in (False, True):
        torch.manual_seed(n_in + n_out)
        layer = CPLLinear(n_in, n_out).double()
        with torch.no_grad():
            layer.weight.mul_(5)  # the bound must not depend on the scale
        if worst:
            _all_positive(layer)
        assert max(_sigmas(layer, (n_in,), train=True)) <= 1 + TOL_F64
        layer32 = CPLLinear(n_in, n_out)
        layer32.load_state_dict({k: v.float() for k, v in layer.state_dict().items()})
        assert max(_sigmas(layer32, (n_in,), train=False)) <= 1 + TOL_F64


def test_eval_on_another_input_size_uses_its_own_bound():
    torch.manual_seed(0)
    layer = CPLConv2d(3, 3, 3, input_size=(6, 6)).eval()
    with pytest.raises(ValueError, match="built for inputs of size"):
        layer.train()(torch.randn(1, 3, 9, 9))
    layer.eval()
    assert layer.eval_weight((9, 9)) <= layer.eval_weight((6, 6))  # a larger grid's norm
    plain = layer.export((9, 9)).double()
    _all_positive(layer)
    plain = layer.export((9, 9)).double()
    assert _jac_norm(plain, _points((3, 9, 9))[0]) <= 1 + TOL_F64


def test_state_survives_a_round_trip():
    torch.manual_seed(0)
    layer = CPLConv2d(3, 3, 3, input_size=(6, 6))
    for _ in range(3):
        layer(torch.randn(2, 3, 6, 6))  # the power-iteration vectors move
    fresh = CPLConv2d(3, 3, 3, input_size=(6, 6))
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.v, layer.v)
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(fresh(x), layer(x))


def test_in_lipconvnet_trains_certifies_and_exports():
    cfg = models.LipConvNetConfig(layer="cpl", width=4, blocks=2, depth=1,
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
    assert torch.allclose(export_tree(net)(x), net(x), atol=1e-5)


@pytest.mark.parametrize("name", ["convnet", "lipresnet"])
def test_in_models_with_stride_and_channel_changes(name):
    cfg_cls = {"convnet": models.ConvNetConfig, "lipresnet": models.LipResNetConfig}[name]
    net = getattr(models, name)(cfg_cls(layer="cpl", width=4, input_shape=(3, 8, 8)))
    x = torch.randn(2, 3, 8, 8)
    net(x).sum().backward()
    net.eval()
    assert torch.allclose(export_tree(net)(x), net(x), atol=1e-5)


def test_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from onelip.export import onnx_max_error, to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(CPLConv2d(2, 3, 3, input_size=(8, 8)),
                              CPLConv2d(3, 4, 3, stride=2, input_size=(8, 8)),
                              torch.nn.Flatten(), CPLLinear(64, 10)).eval()
    path = to_onnx(net, tmp_path / "cpl.onnx", input_shape=(2, 8, 8))
    assert onnx_max_error(net, path, torch.randn(3, 2, 8, 8)) <= 1e-5
