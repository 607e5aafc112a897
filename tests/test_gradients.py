# SPDX-License-Identifier: MIT
"""Gradients reach the input and every parameter of every onelip layer, in training mode.

Regression (issue 10): ``OrthoLinear(d_in, d_out, bias=False)`` returned, on its fast
training path, an output without ``grad_fn`` (the custom autograd function returned the same
tensor as its differentiable output and as its non-differentiable side output), so as a last
layer ``backward()`` raised, and as a middle layer every layer before it silently stopped
learning. Each layer with parameters is tested here with and without bias, alone (input
gradient) and behind another layer (that layer's gradients go through it).
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from layer_table import public_layers
from torch import nn

import onelip.nn as onn

IMAGE = (4, 6, 6)  # (C, H, W) of the image layers' inputs
DENSE = 6  # features of the dense layers' inputs


def _dense_cases() -> dict[str, Callable[[bool], nn.Module]]:
    return {
        "OrthoLinear": lambda bias: onn.OrthoLinear(DENSE, 4, bias=bias),
        "OrthoLinear_wide": lambda bias: onn.OrthoLinear(DENSE, 8, bias=bias),
        "OrthoLinear_square": lambda bias: onn.OrthoLinear(DENSE, DENSE, bias=bias),
        "SpectralLinear": lambda bias: onn.SpectralLinear(DENSE, 4, bias=bias),
        "FrobeniusLinear": lambda bias: onn.FrobeniusLinear(DENSE, 3, bias=bias),
        "FrobeniusLinear_per_row": lambda bias: onn.FrobeniusLinear(DENSE, 3, bias=bias,
                                                                    per_row=True),
        "BatchCentering": lambda bias: onn.BatchCentering(DENSE, bias=bias),
        "SLLBlock": lambda bias: onn.SLLBlock(DENSE, 7),  # always has a bias
        "ConvexResidual": lambda bias: onn.ConvexResidual(
            onn.Sequential(onn.OrthoLinear(DENSE, DENSE, bias=bias), onn.MaxMin()), 0.3,
            learnable=True),
        "AOLLinear": lambda bias: _perturbed(onn.AOLLinear(DENSE, 4, bias=bias,
                                                           learnable_q=True)),
        "CPLLinear": lambda bias: onn.CPLLinear(DENSE, 4, bias=bias),
        "BROLinear": lambda bias: onn.BROLinear(DENSE, 4, bias=bias),
        "Sequential": lambda bias: onn.Sequential(onn.OrthoLinear(DENSE, 6, bias=bias),
                                                  onn.GroupSort(2),
                                                  onn.SpectralLinear(6, 2, bias=bias)),
    }


def _perturbed(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        layer.weight.add_(0.1 * torch.randn_like(layer.weight))
    return layer


def _image_cases() -> dict[str, Callable[[bool], nn.Module]]:
    c, h, w = IMAGE
    return {
        "OrthoConv2d": lambda bias: onn.OrthoConv2d(c, 4, 3, bias=bias),
        "OrthoConv2d_stride2": lambda bias: onn.OrthoConv2d(c, 8, 3, stride=2, bias=bias),
        "OrthoConv2d_circular": lambda bias: onn.OrthoConv2d(c, c, 3, bias=bias,
                                                             padding_mode="circular"),
        "OrthoConv2d_1x1": lambda bias: onn.OrthoConv2d(c, 5, 1, bias=bias),
        "SpectralConv2d": lambda bias: onn.SpectralConv2d(c, 4, 3, input_size=(h, w),
                                                          bias=bias),
        "SpectralConv2d_stride2": lambda bias: onn.SpectralConv2d(
            c, 4, 3, input_size=(h, w), stride=2, bias=bias),
        "SLLConv2d": lambda bias: onn.SLLConv2d(c, 4),  # always has a bias
        # off its Dirac initialisation (where |KᵀK| is diagonal and q has no effect)
        "AOLConv2d": lambda bias: _perturbed(onn.AOLConv2d(c, 5, 3, bias=bias,
                                                           learnable_q=True)),
        "AOLConv2d_stride2": lambda bias: onn.AOLConv2d(c, 8, 3, stride=2, bias=bias),
        "RKOConv2d": lambda bias: _perturbed(onn.RKOConv2d(c, 5, 3, bias=bias)),
        "RKOConv2d_stride2": lambda bias: onn.RKOConv2d(c, 8, 3, stride=2, bias=bias),
        "CPLConv2d": lambda bias: onn.CPLConv2d(c, 5, 3, input_size=(h, w), bias=bias),
        "CPLConv2d_stride2": lambda bias: onn.CPLConv2d(c, 8, 3, input_size=(h, w), stride=2,
                                                        bias=bias),
        "SOCConv2d": lambda bias: onn.SOCConv2d(c, 5, 3, bias=bias),
        "SOCConv2d_stride2": lambda bias: onn.SOCConv2d(c, 8, 3, stride=2, bias=bias),
        "BROConv2d": lambda bias: onn.BROConv2d(c, 5, 3, input_size=(h, w), bias=bias),
        "BROConv2d_stride2": lambda bias: onn.BROConv2d(c, 8, 3, input_size=(h, w), stride=2,
                                                        bias=bias),
        "LiResConv2d": lambda bias: onn.LiResConv2d(c, 5, 3, input_size=(h, w), bias=bias),
        "ShiftConv2d": lambda bias: onn.ShiftConv2d(c, 8, 3, input_size=(h, w), bias=bias),
        "ShiftConv2d_stride2": lambda bias: onn.ShiftConv2d(c, 8, 3, input_size=(h, w),
                                                            stride=2, bias=bias),
        "BatchCentering2d": lambda bias: onn.BatchCentering(c, bias=bias),
        "ConvexResidual2d": lambda bias: onn.ConvexResidual(
            onn.OrthoConv2d(c, c, 3, bias=bias), 0.5, learnable=True),
    }


def _parameter_free_cases() -> dict[str, tuple[Callable[[bool], nn.Module], str]]:
    """Layers without (or with only a bias as) parameters: the input gradient must pass."""
    c, h, w = IMAGE
    return {
        "Abs": (lambda bias: onn.Abs(), "dense"),
        "BetaAbs": (lambda bias: onn.BetaAbs(0.5), "dense"),
        "MaxMin": (lambda bias: onn.MaxMin(), "dense"),
        "GroupSort": (lambda bias: onn.GroupSort(3), "dense"),
        "FullSort": (lambda bias: onn.FullSort(), "dense"),
        "LayerCentering": (lambda bias: onn.LayerCentering(), "dense"),
        "ChannelShift": (lambda bias: onn.ChannelShift(DENSE), "dense"),
        "Residual": (lambda bias: onn.Residual(nn.Linear(DENSE, DENSE), skip=0.5, scale=0.5),
                     "dense"),
        "Normalize": (lambda bias: onn.Normalize([0.5] * c, [0.25] * c), "image"),
        "ZeroChannelPad": (lambda bias: onn.ZeroChannelPad(c + 2), "image"),
        "FirstChannels": (lambda bias: onn.FirstChannels(c // 2), "image"),
        "InvertibleDownsample": (lambda bias: onn.InvertibleDownsample(2), "image"),
        "L2NormPool2d": (lambda bias: onn.L2NormPool2d(2), "image"),
        "ScaledAvgPool2d": (lambda bias: onn.ScaledAvgPool2d(2), "image"),
        "GlobalL2NormPool2d": (lambda bias: onn.GlobalL2NormPool2d(), "image"),
        "Flatten": (lambda bias: onn.Flatten(), "image"),
        "ToImage": (lambda bias: onn.ToImage((DENSE, 1, 1)), "dense"),
        # the plain modules SOC and the shift block export to
        "ConvSeries2d": (lambda bias: onn.ConvSeries2d(c, c, c, 3, terms=4, scale=0.5),
                         "image"),
        "SpatialShift": (lambda bias: onn.SpatialShift(1), "image"),
        "PositionBias": (lambda bias: onn.PositionBias(c, h, w), "image"),
    }


CASES = {**{k: (v, "dense") for k, v in _dense_cases().items()},
         **{k: (v, "image") for k, v in _image_cases().items()},
         **_parameter_free_cases()}


def test_every_public_layer_has_a_gradient_case():
    """The table above covers every module class of onelip.nn (a new layer must join it)."""
    stems = [k.split("_")[0] for k in CASES]  # "OrthoConv2d_stride2", "BatchCentering2d"
    covered = set(stems) | {s.removesuffix("2d") for s in stems}
    public = set(public_layers()) | {n for n in onn.__all__ if isinstance(getattr(onn, n), type)
                                      and issubclass(getattr(onn, n), nn.Module)
                                      and not issubclass(getattr(onn, n), onn.LipschitzModule)}
    assert public <= covered, f"layers without a gradient case: {sorted(public - covered)}"


def _input(kind: str, gen: torch.Generator) -> torch.Tensor:
    shape = (8, DENSE) if kind == "dense" else (4, *IMAGE)
    return torch.randn(*shape, generator=gen)


def _front(kind: str, bias: bool) -> nn.Module:
    """A layer in front of the one tested, whose gradients must go through it."""
    if kind == "dense":
        return onn.OrthoLinear(DENSE, DENSE, bias=bias)
    return onn.OrthoConv2d(IMAGE[0], IMAGE[0], 3, bias=bias)


def _objective(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # A random linear functional: a plain sum would have zero gradient through centering.
    return (out * torch.randn(out.shape, generator=gen)).sum()


def _check_grad(name: str, g: torch.Tensor | None) -> None:
    assert g is not None, f"{name}: no gradient"
    assert torch.isfinite(g).all(), f"{name}: non-finite gradient"
    assert g.abs().max() > 0, f"{name}: gradient all zero"


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradients_reach_the_input_and_every_parameter(case, bias):
    make, kind = CASES[case]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    layer = make(bias).train()
    x = _input(kind, gen).requires_grad_(True)
    out = layer(x)
    assert out.grad_fn is not None, "the training output has no grad_fn"
    _objective(out, gen).backward()
    _check_grad("input", x.grad)
    params = dict(layer.named_parameters())
    assert params or (case.startswith("BatchCentering") and not bias) or (
        case in _parameter_free_cases()), "no parameters"
    for name, p in params.items():
        _check_grad(name, p.grad)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradients_go_through_the_layer_to_the_layers_before_it(case, bias):
    """The issue's case: a layer in the middle of a network must pass the gradient on."""
    make, kind = CASES[case]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    front = _front(kind, bias)
    net = onn.Sequential(front, onn.MaxMin(), make(bias)).train()
    _objective(net(_input(kind, gen)), gen).backward()
    for name, p in front.named_parameters():
        _check_grad(f"front.{name}", p.grad)


def test_issue_reproducer_bias_free_ortho_linear():
    """The issue's reproducer, verbatim in substance."""
    net = onn.Sequential(onn.OrthoLinear(4, 8, bias=False), onn.MaxMin(), onn.OrthoLinear(8, 2))
    net(torch.randn(8, 4)).sum().backward()
    _check_grad("net[0].weight", net[0].weight.grad)
    last = onn.OrthoLinear(4, 2, bias=False).train()
    last(torch.randn(3, 4)).sum().backward()  # raised: "does not require grad"
    _check_grad("last.weight", last.weight.grad)


def test_bias_free_ortho_linear_gradient_equals_the_biased_one():
    """Without a bias the fast path must give the gradients of the biased layer (bias 0)."""
    torch.manual_seed(0)
    with_b = onn.OrthoLinear(6, 4).train()
    without = onn.OrthoLinear(6, 4, bias=False).train()
    with torch.no_grad():
        without.weight.copy_(with_b.weight)
    without.retract_()
    with_b.retract_()
    x = torch.randn(5, 6)
    r = torch.randn(5, 4)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (with_b(xa) * r).sum().backward()
    (without(xb) * r).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-6)
    assert torch.allclose(with_b.weight.grad, without.weight.grad, atol=1e-6)
