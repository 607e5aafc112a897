# SPDX-License-Identifier: MIT
"""``module_lipschitz_bound`` of torch's own modules: the bound follows their arguments.

A constant per class gave 1 to ``nn.LeakyReLU(3)`` and ``nn.ELU(alpha=3)`` (3-Lipschitz), and a
certificate on top of it was broken by an attack on 200 of 200 points. Each case here is
checked against the largest difference quotient of the module on a fine grid (elementwise
modules: the Lipschitz constant is sup |f'|), which the bound must cover and, for these
piecewise-smooth functions, meet to 0.5 %."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import onelip.nn as onn
from onelip.certify import certified_accuracy
from onelip.nn.sequential import _KNOWN_BOUNDS, module_lipschitz_bound

CASES = [
    nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-2.0, 3.0), nn.Tanh(), nn.Sigmoid(),
    nn.LeakyReLU(), nn.LeakyReLU(3.0), nn.LeakyReLU(-2.0), nn.LeakyReLU(0.5),
    nn.ELU(), nn.ELU(alpha=3.0), nn.ELU(alpha=0.2), nn.CELU(alpha=0.3), nn.CELU(alpha=4.0),
    nn.SELU(), nn.Softplus(), nn.Softplus(beta=5.0), nn.Softplus(beta=0.2, threshold=30.0),
    nn.PReLU(init=2.5), nn.PReLU(num_parameters=3, init=-0.1), nn.Identity(), nn.Dropout(0.5),
]


def _sup_slope(module: nn.Module) -> float:
    """max |f(x) − f(y)| / |x − y| over neighbouring points of a fine grid on [−30, 30]."""
    x = torch.linspace(-30, 30, 600_001, dtype=torch.float64)
    if isinstance(module, nn.PReLU):
        c = module.weight.numel()
        x = x[: (x.numel() // c) * c].reshape(-1, c)
    with torch.no_grad():
        y = module.double().eval()(x)
    dx = x.diff(dim=0)
    return float((y.diff(dim=0) / dx).abs().max())


@pytest.mark.parametrize("module", CASES, ids=lambda m: repr(m))
def test_the_bound_covers_the_sup_slope_and_meets_it(module):
    bound = module_lipschitz_bound(module)
    slope = _sup_slope(module)
    assert slope <= bound * (1 + 1e-9), (module, slope, bound)
    assert slope >= 0.995 * bound, (module, slope, bound)  # not a loose guess either


def test_every_known_module_class_is_in_the_cases():
    assert set(_KNOWN_BOUNDS) - {nn.Flatten, nn.Unflatten} <= {type(m) for m in CASES}


def test_a_softplus_whose_threshold_makes_a_jump_is_refused():
    # torch's softplus is x past βx > threshold: at threshold 1 it jumps by log(1 + e^-1)/β
    with pytest.raises(TypeError, match=r"threshold=1\): .* a jump of 1.57"):
        module_lipschitz_bound(nn.Softplus(beta=0.2, threshold=1.0))
    assert _sup_slope(nn.Softplus(beta=0.2, threshold=1.0)) > 1e3  # the jump, on the grid


def test_arguments_change_the_bound():
    assert module_lipschitz_bound(nn.LeakyReLU(3.0)) == 3.0
    assert module_lipschitz_bound(nn.LeakyReLU(-2.0)) == 2.0
    assert module_lipschitz_bound(nn.ELU(alpha=3.0)) == 3.0
    assert module_lipschitz_bound(nn.LeakyReLU(0.01)) == 1.0
    assert module_lipschitz_bound(nn.SELU()) == pytest.approx(1.7581, abs=1e-4)


def test_a_certificate_through_leaky_relu_3_survives_the_attack_it_failed():
    torch.manual_seed(0)
    net = onn.Sequential(onn.OrthoLinear(2, 16), nn.LeakyReLU(3.0), onn.OrthoLinear(16, 2))
    net.eval()
    assert net.lipschitz_bound() == pytest.approx(3.0, rel=1e-6)
    x = torch.randn(200, 2)
    with torch.no_grad():
        out = net(x)
    y = out.argmax(1)
    margin = (out.max(1).values - out.min(1).values)  # K = 2: top-1 minus top-2
    radius = margin / (2 ** 0.5 * net.lipschitz_bound())
    # the worst direction for each point: step along the gradient of the margin
    xa = x.clone().requires_grad_(True)
    o = net(xa)
    m = o.gather(1, y[:, None])[:, 0] - o.gather(1, (1 - y)[:, None])[:, 0]
    (g,) = torch.autograd.grad(m.sum(), xa)
    step = -g / g.norm(dim=1, keepdim=True).clamp_min(1e-12) * radius[:, None] * 0.999
    with torch.no_grad():
        flipped = net(x + step).argmax(1) != y
    assert int(flipped.sum()) == 0
    # the library's radii are these (bound 3), not 3× larger as with the old constant 1,
    # whose "certified" radius the same attack breaks
    res = certified_accuracy(net, x, y, eps=0.0)
    assert torch.allclose(res["radii"].double(), radius.double(), rtol=1e-4)
    with torch.no_grad():
        assert int((net(x + 3 * step).argmax(1) != y).sum()) > 0
