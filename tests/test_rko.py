# SPDX-License-Identifier: MIT
"""RKOConv2d, the paper's Fig. 3 parameterisation: the patch-count bound holds, is attained
where the proof says it is, and the layer starts as small as the paper's network."""

from __future__ import annotations

import pytest
import torch
from checks import assert_lipschitz, operator_matrix

from onelip import models
from onelip import nn as onn
from onelip.nn.rko import patch_count, rko_kernel


def _norm(conv, shape):
    op = operator_matrix(lambda x: conv(x) - conv(torch.zeros_like(x)), shape,
                         dtype=torch.float64)
    return float(torch.linalg.matrix_norm(op, ord=2))


@pytest.mark.parametrize("stride,k", [(1, 3), (2, 3), (1, 5), (2, 4)])
def test_random_latents_stay_within_one_in_both_modes(stride, k):
    torch.manual_seed(stride + k)
    for _ in range(3):
        conv = onn.RKOConv2d(3, 5, k, stride=stride).double()
        with torch.no_grad():
            conv.weight.normal_().mul_(torch.rand(()) * 10)
        for mode in (True, False):
            conv.train(mode)
            assert _norm(conv, (3, 7, 7)) <= 1 + 1e-12


def test_the_bound_is_attained_by_a_kernel_constant_over_its_taps():
    """For K constant over the taps (one output channel, one input), T_K on a large input is
    close to k_h·k_w times the tap, i.e. ‖K_r‖·√n: the 1/√n correction is the best constant
    from the reshaped kernel alone (at 16×16 the borders cost a few per cent)."""
    conv = onn.RKOConv2d(1, 1, 3).double().eval()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    k = rko_kernel(conv.weight.detach(), iterations=15, stride=(1, 1))
    assert float(k.flatten(1).norm()) == pytest.approx(1 / 3, rel=1e-9)  # ‖Q‖ = 1, / √9
    assert 0.95 <= _norm(conv, (1, 16, 16)) <= 1.0


def test_the_reshaped_kernel_is_orthonormal_after_the_bjorck_steps():
    conv = onn.RKOConv2d(8, 16, 3).double()
    with torch.no_grad():
        conv.weight.add_(0.3 * torch.randn_like(conv.weight))
    q = rko_kernel(conv.weight.detach(), iterations=15, stride=(1, 1)).flatten(1) * 3
    s = torch.linalg.svdvals(q)
    assert float(s.max()) <= 1 + 1e-12 and float(s.min()) >= 0.99


def test_patch_count_and_refusals():
    assert patch_count((3, 3), (1, 1)) == 9 and patch_count((3, 3), (2, 2)) == 4
    assert patch_count((4, 4), (2, 2)) == 4 and patch_count((1, 1), (1, 1)) == 1
    with pytest.raises(ValueError, match="zero padding only.*padding_mode='zeros'"):
        onn.RKOConv2d(2, 2, 3, padding_mode="circular")
    with pytest.raises(ValueError, match="iterations"):
        onn.RKOConv2d(2, 2, 3, iterations=-1)


def test_float32_as_applied_after_adam_steps():
    torch.manual_seed(0)
    conv = onn.RKOConv2d(4, 6, 3)
    opt = torch.optim.Adam(conv.parameters(), lr=0.05)
    x = torch.randn(8, 4, 6, 6)
    for _ in range(20):  # push the norm up
        opt.zero_grad()
        (-conv(x).pow(2).sum()).backward()
        opt.step()
    for mode in (True, False):
        conv.train(mode)
        assert_lipschitz(conv, (4, 6, 6), 1.0, affine=True)


def test_the_paper_vgg_with_rko_starts_as_small_as_the_paper_network():
    """The paper's VGG (8 RKO convolutions) has logits of a few 1e-3 on images in [0, 1]
    (the paper's network on 0–255 pixels: about one pixel unit); SpectralConv2d's
    Dirac-orthogonal start gives logits spread over several units."""
    net, _ = models.build("convnet", **models.presets("convnet")["bethune-vgg"],
                          input_shape=(3, 32, 32), num_outputs=10, layer="rko")
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 489_322
    torch.manual_seed(0)
    with torch.no_grad():
        z = net.eval()(torch.rand(16, 3, 32, 32))
    spread = float((z.max(1).values - z.min(1).values).mean())
    assert 1e-5 < spread < 0.05, spread
