# SPDX-License-Identifier: MIT
"""Attacks on the claims of LiResConv2d (LiResNet's linear residual convolution, Hu et al.
2023, normalised by onelip's certified operator-norm bound), its Krylov tracking, and the
LiResNet preset of lipresnet.

Exact operators come from the impulse response in float64 of the float32 eval kernel as
applied (``export().double()``) or of the training forward (one batched call: one operator).
The negative control builds the reference's normalisation (power iteration on the padded
operator) and shows that it leaves σ_max > 1."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as TF
from checks import operator_matrix

from onelip import functional as F
from onelip import models
from onelip.cli import main
from onelip.nn import LiResConv2d, module_lipschitz_bound
from onelip.nn.liresnet import symbol_krylov_
from onelip.nn.utils import export_tree

TOL_EVAL = 1e-9  # the float32 kernel as applied is ≤ 1 by its cast margin; float64 SVD only
TRAIN_LAG = 1e-3  # documented train-mode lag (measured ≤ 0.997 on these objectives)

GRID = [  # (C_in, C_out, stride, H)
    (4, 4, 1, 8), (3, 5, 1, 7), (5, 3, 1, 8), (3, 6, 2, 8), (4, 4, 2, 7), (2, 3, 1, 8),
]


def _sigma(f, shape) -> float:
    with torch.no_grad():
        op = operator_matrix(lambda x: f(x) - f(torch.zeros_like(x)), shape,
                             dtype=torch.float64)
    return float(torch.linalg.matrix_norm(op, ord=2))


def _eval_sigma(layer, shape) -> float:
    plain = layer.export((shape[1], shape[2])).double()
    return _sigma(plain, shape)


def _train_sigma(layer, shape) -> float:
    snap = copy.deepcopy(layer).train()  # the forward refreshes the tracking: one operator
    return _sigma(lambda x: snap(x.float()).double(), shape)


def _push(layer, shape, steps: int, lr: float = 2e-2, seed: int = 0):
    """Adam steps on an objective that pushes the norm of the output up."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    layer.train()
    for _ in range(steps):
        x = torch.randn(4, *shape, generator=g)
        loss = -layer(x).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return layer


@pytest.mark.parametrize("c_in,c_out,s,h", GRID)
def test_eval_within_one_at_init_random_and_after_adam(c_in, c_out, s, h):
    torch.manual_seed(c_in + 7 * c_out + s)
    shape = (c_in, h, h)
    layer = LiResConv2d(c_in, c_out, 3, stride=s, input_size=(h, h)).eval()
    assert _eval_sigma(layer, shape) <= 1 + TOL_EVAL
    with torch.no_grad():  # a residual as large as the identity
        layer.weight.normal_(0, 0.5)
    assert _eval_sigma(layer, shape) <= 1 + TOL_EVAL
    _push(layer, shape, steps=10)
    layer.eval()
    assert _eval_sigma(layer, shape) <= 1 + TOL_EVAL
    # another input size: its own certified kernel (cached per size)
    assert _eval_sigma(layer, (c_in, h + 3, h + 3)) <= 1 + TOL_EVAL
    assert layer.lipschitz_bound() == 1.0


@pytest.mark.parametrize("c_in,c_out,s,h", GRID + [(8, 8, 1, 12)])
def test_train_within_the_documented_lag_after_adam(c_in, c_out, s, h):
    """25 Adam steps at lr 2e-2 that push the norm up; the training operator, measured every
    5 steps, stays within the documented lag (12×12: 91 frequencies, more than the 40
    refreshed per step)."""
    torch.manual_seed(1)
    shape = (c_in, h, h)
    layer = LiResConv2d(c_in, c_out, 3, stride=s, input_size=(h, h))
    worst = _train_sigma(layer, shape)
    for i in range(5):
        _push(layer, shape, steps=5, seed=i)
        worst = max(worst, _train_sigma(layer, shape))
    assert worst <= 1 + TRAIN_LAG, worst
    layer.eval()
    assert _eval_sigma(layer, shape) <= 1 + TOL_EVAL


def test_zero_residual_is_the_identity():
    layer = LiResConv2d(4, 4, 3, input_size=(6, 6)).eval()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.normal_()
    x = torch.randn(2, 4, 6, 6)
    y = layer(x) - layer.bias.view(1, -1, 1, 1)
    assert torch.allclose(y, x, atol=1e-6)
    assert _eval_sigma(layer, (4, 6, 6)) >= 1 - 1e-5  # tight: β = 1 exactly


def test_kernel_is_identity_plus_scaled_residual():
    layer = LiResConv2d(3, 5, 3, input_size=(6, 6), gamma=0.25)
    k = layer.kernel()
    eye = torch.zeros(5, 3, 3, 3)
    eye[torch.arange(3), torch.arange(3), 1, 1] = 1
    assert torch.allclose(k, eye + 0.25 * layer.weight)


def test_eval_is_one_cached_plain_conv():
    layer = LiResConv2d(4, 4, 3, input_size=(8, 8)).eval()
    plain = layer.export()
    assert type(plain) is torch.nn.Conv2d
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(plain(x), layer(x))
    assert layer.eval_weight() is layer.eval_weight()  # cached: eval costs one conv2d
    w = layer.eval_weight()
    assert torch.equal(layer(x), TF.conv2d(x, w, layer.bias, padding=1))


def test_negative_control_power_iteration_underestimates():
    """The reference's normalisation: K = I + W/√depth divided by ten steps of power
    iteration on the padded operator from a random vector (``LiResConv.lipschitz``). The
    estimate is a lower bound, and on this seeded kernel the normalised convolution has
    σ_max ≈ 1.047 > 1 (measured); LiResConv2d with the same W is ≤ 1."""
    g = torch.Generator().manual_seed(0)
    c, n, depth = 8, 8, 12
    w = torch.randn(c, c, 3, 3, generator=g, dtype=torch.float64) * 4 / (c * 9)
    k = w / math.sqrt(depth)
    k[:, :, 1, 1] += torch.eye(c, dtype=torch.float64)
    x = torch.randn(1, c, n, n, generator=g, dtype=torch.float64)
    for _ in range(10):
        x = TF.conv_transpose2d(TF.conv2d(x, k, padding=1), k, padding=1)
        x = x / x.norm()
    estimate = TF.conv2d(x, k, padding=1).norm()
    sigma = _sigma(lambda t: TF.conv2d(t, k / estimate, padding=1), (c, n, n))
    assert sigma > 1.03, sigma  # the reference's "1-Lipschitz" block is not
    layer = LiResConv2d(c, c, 3, input_size=(n, n), gamma=1 / math.sqrt(depth)).eval()
    with torch.no_grad():
        layer.weight.copy_(w)
    assert _eval_sigma(layer, (c, n, n)) <= 1 + TOL_EVAL
    assert _eval_sigma(layer, (c, n, n)) >= 0.95  # and not much below: the bound is tight


def test_krylov_refresh_is_a_lower_bound_and_beats_power_iteration():
    """On identity-dominated symbols (the top of the spectrum near-degenerate), three
    refreshes (training steps) from a random start: Rayleigh–Ritz on 4-dimensional Krylov
    spaces is within 1e-5 of σ_max at every frequency, three power-iteration steps per
    refresh still 2 % below (measured 1e-7 and 0.022); both stay below σ_max."""
    g = torch.Generator().manual_seed(0)
    k = torch.randn(6, 6, 3, 3, generator=g) * 0.05
    k[:, :, 1, 1] += torch.eye(6)
    sym = F.conv2d_symbol(k, (9, 9)).flatten(0, 1)  # (F, 6, 6) complex64
    exact = torch.linalg.matrix_norm(sym.to(torch.complex128), ord=2)
    v0 = torch.randn(sym.shape[0], 6, dtype=sym.dtype, generator=g)
    v_pi, v_kr = v0.clone(), v0.clone()
    for _ in range(3):
        F.symbol_power_iteration(sym, v_pi, n_iter=3)
        symbol_krylov_(sym, v_kr, dim=4)

    def est(v):
        return torch.linalg.vector_norm((sym @ v[..., None])[..., 0], dim=-1).double()

    assert bool((est(v_kr) <= exact * (1 + 1e-6)).all())
    gap_kr = float(((exact - est(v_kr)) / exact).max())
    gap_pi = float(((exact - est(v_pi)) / exact).max())
    assert gap_kr < 1e-5 and gap_pi > 1e-2, (gap_kr, gap_pi)


def test_rejects_bad_options():
    for kwargs, match in [({"kernel_size": 2}, "odd kernel_size"), ({"gamma": 0.0}, "gamma"),
                          ({"krylov_dim": 1}, "krylov_dim")]:
        k = kwargs.pop("kernel_size", 3)
        with pytest.raises(ValueError, match=match):
            LiResConv2d(2, 2, k, input_size=(4, 4), **kwargs)
    with pytest.raises(ValueError, match="built for inputs of size"):
        LiResConv2d(2, 2, 3, input_size=(4, 4))(torch.randn(1, 2, 5, 5))


def _step_certify_export(net, x):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss = TF.cross_entropy(net(x), torch.randint(0, 10, (x.shape[0],)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    net.eval()
    assert module_lipschitz_bound(net) <= 1.0
    assert torch.allclose(export_tree(net)(x), net(x), atol=1e-6)


def test_in_lipconvnet_convnet_and_lipresnet():
    x = torch.randn(4, 3, 8, 8)
    _step_certify_export(models.lipconvnet(models.LipConvNetConfig(
        layer="liresnet", width=4, blocks=2, depth=1, input_shape=(3, 8, 8))), x)
    net = models.convnet(models.ConvNetConfig(layer="liresnet", width=4, input_shape=(3, 7, 7)))
    assert any(isinstance(m, LiResConv2d) and m.stride[0] == 2 for m in net.modules())
    _step_certify_export(net, torch.randn(4, 3, 7, 7))
    _step_certify_export(models.lipresnet(models.LipResNetConfig(
        layer="liresnet", width=4, blocks=(1, 1), input_shape=(3, 8, 8))), x)


def test_liresnet_preset_builds_trains_certifies_exports(tmp_path):
    net, cfg = models.build("lipresnet", **{**models.presets("lipresnet")["liresnet"],
                                            "width": 4, "input_shape": (3, 8, 8)})
    blocks = [m for m in net.modules() if isinstance(m, LiResConv2d)]
    assert len(blocks) == sum(cfg.blocks) and cfg.block == "liresnet"
    assert math.isclose(blocks[-1].gamma, 1 / math.sqrt(cfg.blocks[-1]))
    _step_certify_export(net, torch.randn(4, 3, 8, 8))
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from onelip.export import onnx_max_error, to_onnx

    path = to_onnx(net, tmp_path / "liresnet.onnx", input_shape=(3, 8, 8))
    assert onnx_max_error(net, path, torch.randn(3, 3, 8, 8)) <= 1e-5


def test_cli_trains_and_certifies_the_preset(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "lipresnet", "--set",
                 "preset=liresnet", "--set", "width=4", "--set", "blocks=1,1", "--epochs", "1",
                 "--quiet", "--out", str(out)]) == 0
    assert main(["certify", str(out), "--eps", "0.1"]) == 0
    assert "L ≤ 1.0000" in capsys.readouterr().out
