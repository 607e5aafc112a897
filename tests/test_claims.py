# SPDX-License-Identifier: MIT
"""Attacks on the claims every layer makes about itself: each public layer states its bound,
the bound holds for the float32 weights as applied (checked exactly, in float64, on the
exported plain modules), and a container whose ``forward`` is not the one its bound was
derived for is refused.

Float32 checks are *exact*: the exported float32 weights are converted to float64 (an exact
conversion) and the operator norm of that float64 function is compared with
``lipschitz_bound()`` with no tolerance. Without the float32 margins (``unit_norm_cast``,
``float32_cast_margin``, ``sll_cast``) the rounded weights measured σ_max = 1 + 3e-9 to
1 + 2.3e-7 on the cases below.
"""

from __future__ import annotations

import math

import pytest
import torch
from checks import jacobian_at, operator_matrix
from layer_table import CASES, public_layers

import onelip.nn as onn
from onelip.certify import (
    attack_l2,
    certified_accuracy,
    certified_radius,
    lipschitz_bound,
    split_last_linear,
)
from onelip.nn import LipschitzModule, check_bound_applies, module_lipschitz_bound
from onelip.nn.utils import export_tree, retract_

# ==== (a) every public layer states its bound ===============================================


def _examples() -> dict[str, LipschitzModule]:
    """One instance of every public onelip layer, from the one layer table."""
    return {name: case.build() for name, case in CASES.items()}


def _public_layers() -> dict[str, type]:
    return public_layers()


def test_every_public_layer_states_its_own_bound():
    layers, examples = _public_layers(), _examples()
    assert set(layers) == set(examples), "list every public layer in _examples()"
    for name, cls in layers.items():
        owner = next(c for c in cls.__mro__ if "lipschitz_bound" in c.__dict__)
        assert owner is not LipschitzModule, name
        assert owner.__module__.startswith("onelip."), (name, owner)
        assert not getattr(owner.lipschitz_bound, "__isabstractmethod__", False), name
        layer = examples[name]
        assert type(layer) is cls
        for mode in (True, False):
            layer.train(mode)
            bound = layer.lipschitz_bound()
            assert isinstance(bound, float) and math.isfinite(bound) and bound > 0, \
                (name, bound)
            check_bound_applies(layer)  # its forward is the one its bound was stated for
            assert module_lipschitz_bound(layer) == bound


def test_a_layer_that_forgets_its_bound_cannot_be_built():
    class Doubling(LipschitzModule):
        def forward(self, x):
            return 2 * x

    with pytest.raises(TypeError, match="lipschitz_bound"):
        Doubling()


# ==== (b) float32 margins: exact checks in float64 of the weights as applied ================


def _sigma_max(w: torch.Tensor) -> float:
    """σ_max of the weight as stored, by float64 SVD (the float32 → float64 cast is exact)."""
    assert w.dtype == torch.float32
    return float(torch.linalg.matrix_norm(w.detach().double(), ord=2))


def _adam_steps(layer: torch.nn.Module, shape: tuple[int, ...], steps: int = 3,
                lr: float = 1e-2) -> torch.nn.Module:
    """A few Adam steps in train mode (``retract_`` after each, as ``onelip.train.fit``),
    then eval mode."""
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    layer.train()
    for _ in range(steps):
        x = torch.randn(8, *shape)
        opt.zero_grad()
        (layer(x) - 1).square().mean().backward()
        opt.step()
        retract_(layer)
    return layer.eval()


DENSE = [  # (layer class, in, out): square, wide, tall; a binary Frobenius head
    (onn.OrthoLinear, 64, 64),
    (onn.OrthoLinear, 64, 32),
    (onn.OrthoLinear, 32, 64),
    (onn.SpectralLinear, 64, 64),
    (onn.SpectralLinear, 48, 16),
    (onn.SpectralLinear, 16, 48),
    (onn.FrobeniusLinear, 64, 1),
    (onn.FrobeniusLinear, 200, 1),
]


@pytest.mark.parametrize("cls,n_in,n_out", DENSE)
def test_dense_float32_weight_applied_has_norm_at_most_1(cls, n_in, n_out):
    """20 random inits, then 3 Adam steps each: σ_max of the float32 weight applied in eval
    mode (and exported) ≤ 1 exactly. Rounding the float64-normalised weight without
    ``unit_norm_cast`` gives up to 1 + 4e-8 (OrthoLinear, 20 inits of 20), 1 + 7e-9
    (SpectralLinear) and 1 + 9e-9 (FrobeniusLinear, about half the inits each)."""
    worst = 0.0
    for seed in range(20):
        torch.manual_seed(seed)
        layer = cls(n_in, n_out).eval()
        for state in ("init", "trained"):
            if state == "trained":
                _adam_steps(layer, (n_in,))
            w = layer.effective_weight()
            assert torch.equal(layer.export().weight, w)
            worst = max(worst, _sigma_max(w))
        assert layer.lipschitz_bound() == 1.0
    assert worst <= 1.0, f"σ_max of the applied weight = 1 + {worst - 1:.3g}"


def test_trained_mlp_exact_jacobian_norm_at_most_1():
    """A trained MLP of orthogonal layers and MaxMin (Jacobian orthogonal in exact
    arithmetic): the exact Jacobian norm of its float32 eval function, evaluated in float64
    from the exported float32 weights, is ≤ 1 at every test point (1 + 5e-8 before the
    cast)."""
    worst = 0.0
    for seed in range(3):
        torch.manual_seed(seed)
        model = onn.Sequential(onn.OrthoLinear(16, 32), onn.MaxMin(), onn.OrthoLinear(32, 32),
                               onn.MaxMin(), onn.OrthoLinear(32, 32), onn.MaxMin(),
                               onn.OrthoLinear(32, 32))
        _adam_steps(model, (16,), steps=5)
        assert model.lipschitz_bound() == 1.0
        plain = export_tree(model).double()  # exact: float32 weights as applied
        for _ in range(8):
            x = torch.randn(16, dtype=torch.float64)
            worst = max(worst, float(torch.linalg.matrix_norm(jacobian_at(plain, x), ord=2)))
    assert worst <= 1.0, f"Jacobian norm 1 + {worst - 1:.3g}"


def _exported_operator_norm(layer: LipschitzModule, shape: tuple[int, ...]) -> float:
    """Exact norm of the linear operator of ``layer.export()``, evaluated in float64 on the
    float32 weights (impulse response)."""
    plain = layer.export()
    assert plain.weight.dtype == torch.float32
    with torch.no_grad():
        mat = operator_matrix(plain.double(), shape, dtype=torch.float64)
    return float(torch.linalg.matrix_norm(mat, ord=2))


ORTHO_CONV = [  # (C_in, C_out, stride, padding_mode): circular = exactly orthogonal
    (4, 4, 1, "circular"),
    (4, 4, 1, "zeros"),
    (2, 8, 2, "circular"),
    (4, 16, 2, "circular"),
    (4, 4, 2, "zeros"),
]


@pytest.mark.parametrize("cin,cout,stride,mode", ORTHO_CONV)
def test_ortho_conv_float32_kernel_applied_within_bound(cin, cout, stride, mode):
    """Init and after Adam steps: the exported float32 kernel's exact operator norm (8×8
    inputs) ≤ ``lipschitz_bound()``. Without ``float32_cast_margin``: 1 + 3e-8 to 1 + 5e-8."""
    worst = 0.0
    for seed in range(4):
        torch.manual_seed(seed)
        layer = onn.OrthoConv2d(cin, cout, 3, stride=stride, padding_mode=mode).eval()
        worst = max(worst, _exported_operator_norm(layer, (cin, 8, 8)))
        _adam_steps(layer, (cin, 8, 8))
        worst = max(worst, _exported_operator_norm(layer, (cin, 8, 8)))
        assert layer.lipschitz_bound() == 1.0
    assert worst <= 1.0, f"operator norm 1 + {worst - 1:.3g}"


@pytest.mark.parametrize("centre_only", [False, True])
def test_spectral_conv_float32_kernel_applied_within_bound(centre_only):
    """The exported float32 kernel's exact operator norm ≤ ``lipschitz_bound()``. A kernel
    with only its centre tap has no border effect (padded norm = the certified bound), so
    without ``float32_cast_margin`` it reaches 1 + 2e-8."""
    worst = 0.0
    for seed in range(8):
        torch.manual_seed(seed)
        layer = onn.SpectralConv2d(4, 4, 3, input_size=(6, 6))
        if centre_only:
            with torch.no_grad():
                centre = layer.weight[:, :, 1, 1].clone()
                layer.weight.zero_()
                layer.weight[:, :, 1, 1] = centre
            layer.reset_power_iteration()
        else:
            _adam_steps(layer, (4, 6, 6))
        worst = max(worst, _exported_operator_norm(layer.eval(), (4, 6, 6)))
        assert layer.lipschitz_bound() == 1.0
    assert worst <= 1.0, f"operator norm 1 + {worst - 1:.3g}"


def _sll_jacobians(plain, shape: tuple[int, ...], gen: torch.Generator):
    """Exact Jacobians (float64, from the exported float32 weights) of an exported SLL block
    ``skip·x + scale·second(ReLU(first(x)))``: one per ReLU pattern — all active, random
    patterns, and the patterns at random points."""
    plain = plain.double()
    first, second = plain.body[0], plain.body[2]

    def linear(m):
        return lambda x: m(x) - (m.bias.view(-1, *([1] * (x.dim() - 2)))
                                 if m.bias is not None else 0)

    with torch.no_grad():
        m_in = operator_matrix(linear(first), shape, dtype=torch.float64)  # (m·HW, C·HW)
        hidden = (first.out_channels if hasattr(first, "out_channels") else first.out_features,
                  *shape[1:])
        m_out = operator_matrix(second, hidden, dtype=torch.float64)  # (C·HW, m·HW)
        bias = first(torch.zeros(1, *shape, dtype=torch.float64)).reshape(-1)
        masks = [torch.ones(m_in.shape[0], dtype=torch.float64)]
        masks += [(torch.rand(m_in.shape[0], generator=gen) < 0.5).double() for _ in range(8)]
        for _ in range(8):
            x = 2 * torch.randn(m_in.shape[1], generator=gen, dtype=torch.float64)
            masks.append((m_in @ x + bias > 0).double())
    eye = torch.eye(m_in.shape[1], dtype=torch.float64)
    for mask in masks:
        yield plain.skip * eye + plain.scale * (m_out * mask) @ m_in


SLL = [  # (name, builder, input shape); tight cases: orthogonal W (T = WᵀW), one unit, δ kernel
    ("dense", lambda: onn.SLLBlock(16, 16), (16,)),
    ("dense orthogonal", lambda: _orthogonal(onn.SLLBlock(16, 8)), (16,)),
    ("dense one unit", lambda: onn.SLLBlock(16, 1), (16,)),
    ("conv", lambda: onn.SLLConv2d(4, 4), (4, 5, 5)),
    ("conv delta", lambda: _delta(onn.SLLConv2d(4, 4)), (4, 5, 5)),
]


def _orthogonal(block):
    with torch.no_grad():
        torch.nn.init.orthogonal_(block.weight)
    return block


def _delta(block):
    with torch.no_grad():
        q = torch.linalg.qr(torch.randn(block.inner_channels, block.channels))[0]
        block.weight.zero_()
        block.weight[:, :, 1, 1] = q
    return block


@pytest.mark.parametrize("name,build,shape", SLL, ids=[c[0] for c in SLL])
def test_sll_float32_weights_applied_within_bound(name, build, shape):
    """Every ReLU pattern tried: the exact Jacobian norm of the exported float32 block ≤
    ``lipschitz_bound()``; also after Adam steps. Before ``sll_cast`` (T in float32, the
    identity unscaled): up to 1 + 2.3e-7 (orthogonal W), 1 + 1.4e-7 (δ kernel), and
    1 + 1e-15 in the generic cases (a block whose norm is exactly 1 cannot be checked exactly
    in float64; with the margin it is below 1 by more than the float64 rounding)."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for seed in range(3):
        torch.manual_seed(seed)
        block = build().eval()
        for state in ("init", "trained"):
            if state == "trained":
                _adam_steps(block, shape)
            assert block.lipschitz_bound() == 1.0
            for jac in _sll_jacobians(block.export(), shape, gen):
                worst = max(worst, float(torch.linalg.matrix_norm(jac, ord=2)))
    assert worst <= 1.0, f"Jacobian norm 1 + {worst - 1:.3g}"


def test_sll_eval_forward_is_the_export_and_float64_is_unscaled():
    """The eval forward applies the exported weights (the conv as the adjoint of the same
    float32 kernel: only the summation order differs); float64 blocks keep a = 1."""
    x = torch.randn(3, 4, 5, 5)
    block = onn.SLLConv2d(4, 4).eval()
    assert torch.allclose(block(x), block.export()(x), atol=1e-6)
    dense = onn.SLLBlock(6, 4).eval()
    xd = torch.randn(3, 6)
    assert torch.allclose(dense(xd), dense.export()(xd), atol=1e-6)
    for layer in (block, dense):  # the margin is of the order of the float32 rounding
        assert 1 - 1e-6 < layer.skip_factor() < 1.0
    assert dense.train().skip_factor() == 1.0
    assert onn.SLLBlock(6, 4).double().eval().skip_factor() == 1.0


# ==== (c) a container whose forward is not the one its bound was derived for ===============


class Times10(onn.Sequential):
    """Inherits the children's bound (1) but computes 10× the function."""

    def forward(self, x):
        return 10 * super().forward(x)


class Times10Stated(Times10):
    """The same forward, with its bound restated."""

    def lipschitz_bound(self) -> float:
        return 10 * super().lipschitz_bound()


def _classifier(cls):
    torch.manual_seed(0)
    return cls(onn.OrthoLinear(8, 16), onn.MaxMin(), onn.OrthoLinear(16, 3)).eval()


def test_container_overriding_forward_is_refused_and_the_refusal_matters():
    model = _classifier(Times10)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    # What reading the bound off the children (1.0) would certify: the attack breaks it.
    radii = certified_radius(logits, y, lipschitz=1.0)
    found = attack_l2(model, x, y, max_eps=float(radii.max()) + 1.0, steps=20, restarts=1,
                      bisection=4)
    broken = found.min_norm < radii
    assert int(broken.sum()) >= 3, (found.min_norm, radii)
    with torch.no_grad():  # each broken point really flips, inside its "certified" ball
        assert (model(found.x_adv[broken]).argmax(1) != y[broken]).all()
    for certify in (lipschitz_bound, lambda m: certified_accuracy(m, x, y),
                    lambda m: certified_accuracy(m, x, y, method="last_layer"),
                    split_last_linear, lambda m: m.lipschitz_bound(), module_lipschitz_bound):
        with pytest.raises(TypeError, match="Times10 overrides forward"):
            certify(model)


def test_container_restating_its_bound_is_accepted_and_sound():
    model = _classifier(Times10Stated)
    assert math.isclose(lipschitz_bound(model), 10.0)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    result = certified_accuracy(model, x, y, eps=(0.1,))
    assert result["clean"] == 1.0
    found = attack_l2(model, x, y, max_eps=3.0, steps=20, restarts=1, bisection=4)
    assert (found.min_norm >= result["radii"]).all()
    # body @ W_last would drop the ×10: the last-layer split does not apply to its forward
    assert split_last_linear(model) is None
    with pytest.raises(ValueError, match="composition of its children"):
        certified_accuracy(model, x, y, method="last_layer")
