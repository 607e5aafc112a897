# SPDX-License-Identifier: MIT
"""Channel padding/selection, Normalize (bound 1/min σ, certificates in pixel space) and the
ConvNets of Prach et al. (``lipconvnet``)."""

from __future__ import annotations

import math

import pytest
import torch
from checks import assert_lipschitz, exact_singular_values

from onelip import certify
from onelip.export import to_plain
from onelip.models.lipconvnet import LIPCONVNET_PRESETS, LipConvNetConfig, lipconvnet
from onelip.nn.channels import FirstChannels, ZeroChannelPad
from onelip.nn.normalize import Normalize

TOL = 1e-6  # float32 operator of a permutation/projection/diagonal


def test_zero_pad_is_an_isometry_and_first_channels_a_projection():
    s = exact_singular_values(ZeroChannelPad(5), (3, 2, 2), dtype=torch.float64)
    assert torch.allclose(s, torch.ones_like(s)), f"pad singular values {s}"
    s = exact_singular_values(FirstChannels(2), (5, 2, 2), dtype=torch.float64)
    assert float(s.max()) <= 1 and int((s > 0.5).sum()) == 2 * 2 * 2
    with pytest.raises(ValueError, match="only adds"):
        ZeroChannelPad(2)(torch.zeros(1, 3, 2, 2))


def test_normalize_bound_is_one_over_min_std_not_max():
    std = [0.2, 0.5, 1.0]
    norm = Normalize([0.1, 0.2, 0.3], std)
    s = exact_singular_values(norm, (3, 2, 2), dtype=torch.float32)
    assert math.isclose(float(s.max()), 1 / min(std), rel_tol=1e-6)
    assert norm.lipschitz_bound() >= float(s.max())  # holds for the float32 map applied
    assert norm.lipschitz_bound() <= (1 / min(std)) * (1 + 1e-5)
    with pytest.raises(ValueError, match="positive"):
        Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match="one mean and one std"):
        Normalize([0.0, 0.0], [1.0])


def test_normalize_exports_to_a_plain_conv_with_the_same_outputs():
    norm = Normalize([0.4, 0.5], [0.3, 0.7])
    x = torch.rand(4, 2, 5, 5)
    plain = to_plain(torch.nn.Sequential(norm))
    assert torch.allclose(plain(x), norm(x), atol=1e-6)


def _tiny(**kw):
    cfg = LipConvNetConfig(input_shape=(3, 8, 8), width=4, blocks=2, depth=1, **kw)
    return lipconvnet(cfg).eval()


def test_lipconvnet_shapes_bound_and_probes():
    net = _tiny()
    assert net(torch.rand(2, 3 * 64)).shape == (2, 10)
    assert certify.lipschitz_bound(net) == 1.0
    assert_lipschitz(net, (3, 8, 8), 1.0, tol=1e-5, steps=40)


def test_normalised_network_certificates_hold_in_pixel_space():
    """The certificate of a network with Normalize first is a radius in pixel space: an
    attack on the pixels never flips a point inside its certified radius, and the bound is
    1/min σ (not 1: with bound 1 the attack breaks "certified" points)."""
    torch.manual_seed(0)
    std = (0.25, 0.5, 0.5)
    net = _tiny(mean=(0.5, 0.5, 0.5), std=std)
    bound = certify.lipschitz_bound(net)
    assert bound >= 1 / min(std)
    x = torch.rand(48, 3 * 64)
    with torch.no_grad():
        y = net(x).argmax(1)  # certify the model's own predictions
    res = certify.certified_accuracy(net, x, y, [0.0], lipschitz=bound)
    att = certify.attack_l2(net, x, y, max_eps=2.0, steps=30, restarts=1, bisection=6)
    radii = res["radii"]
    found = torch.isfinite(att.min_norm)
    assert found.sum() >= 24, "the attack should find adversarials for most points"
    assert bool((att.min_norm[found] >= radii[found] * (1 - 1e-4)).all()), \
        "an attack beat a pixel-space certificate"
    wrong = certify.certified_accuracy(net, x, y, [0.0], lipschitz=1.0)["radii"]
    assert bool((att.min_norm[found] < wrong[found]).any()), \
        "with bound 1 (ignoring 1/min σ) some certificates should be broken"


def test_plain_export_certifies_as_the_onelip_model():
    """Issue 10: ``lipschitz_bound(to_plain(net))`` raised for any plain ``nn.Conv2d``. The
    exported network (Normalize → a depthwise 1×1 conv, OrthoConv2d → convs, channel pad and
    selection kept) now certifies with the onelip model's bound 1/min σ (within 1e-5) and
    the same certified accuracy."""
    torch.manual_seed(0)
    net = _tiny(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.5)).eval()
    plain = to_plain(net)
    ours, theirs = certify.lipschitz_bound(net), certify.lipschitz_bound(plain)
    assert ours * (1 - 1e-5) <= theirs <= ours * (1 + 1e-6), (ours, theirs)
    x = torch.rand(32, 3 * 64)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = [0.0, 0.02, 0.05]
    a = certify.certified_accuracy(net, x, y, eps)
    b = certify.certified_accuracy(plain, x, y, eps)
    assert all(abs(a["certified"][e] - b["certified"][e]) <= 1e-4 for e in eps)


@pytest.mark.parametrize("preset, width", sorted((k, v["width"])
                                                 for k, v in LIPCONVNET_PRESETS.items()))
def test_presets_are_the_papers_widths(preset, width):
    assert LipConvNetConfig(**LIPCONVNET_PRESETS[preset]).width == width


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        LipConvNetConfig(input_shape=(3, 30, 30))
    with pytest.raises(ValueError, match="one value per input channel"):
        LipConvNetConfig(mean=(0.5,), std=(0.5,))


def test_registry_presets_and_the_papers_vgg(tmp_path):
    from onelip import data, models

    xs, cfg = models.build("lipconvnet", **models.presets("lipconvnet")["xs"])
    assert cfg.width == 16 and certify.lipschitz_bound(xs) == 1.0
    vgg, _ = models.build("convnet", input_shape=(3, 32, 32),
                          **models.presets("convnet")["bethune-vgg"])
    convs = [m for m in to_plain(vgg).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 64, 128, 128, 128]
    plain = sum(p.numel() for p in to_plain(vgg).parameters())
    assert 0.35e6 < plain < 0.55e6, f"the paper's VGG has ~0.4M weights, got {plain}"
    assert vgg.eval()(torch.rand(2, 3072)).shape == (2, 10)
    assert "folder:DIR" in data.available() and "npz:FILE" in data.available()
