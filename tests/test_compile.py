# SPDX-License-Identifier: MIT
"""``torch.compile`` (inductor, CPU) gives the eager outputs and gradients, in train and eval mode.

Layers keep their stateful parts (power-iteration vectors, the eval-mode weight cache, the
train-mode guard) outside the graph (``torch.compiler.disable``); these tests check that the
compiled model still computes the same function. Compared on twin copies, since a train-mode
forward updates power-iteration buffers.

Cold inductor compilation (gcc) on the 2-core test machine: the dense net ~15–20 s, the conv
net 60–85 s (hence ``slow``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from onelip import nn as onn

# inductor reorders float32 reductions; a few ulps of the logits (O(1)).
TOL = 1e-5


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _check_compiled(model: nn.Module, x: torch.Tensor, backend: str = "inductor") -> None:
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend=backend)

    # Train mode: outputs and gradients.
    model.train()
    compiled.train()
    eager_out = model(x)
    comp_out = compiled(x)
    err = (eager_out - comp_out).abs().max().item()
    assert err <= TOL, f"train-mode outputs differ by {err:.2e} > {TOL:.0e}"
    eager_out.square().sum().backward()
    comp_out.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        gerr = (p.grad - q.grad).abs().max().item()
        assert gerr <= TOL * max(1.0, p.grad.abs().max().item()), (
            f"train-mode gradient of {name} differs by {gerr:.2e}"
        )

    # Eval mode (exact cached weights): the same function.
    model.eval()
    compiled.eval()
    with torch.no_grad():
        e = model(x)
        c = compiled(x)
    err = (e - c).abs().max().item()
    assert err <= TOL, f"eval-mode outputs differ by {err:.2e} > {TOL:.0e}"


def test_compile_dense():
    """Every dense layer (orthogonal, spectral, Frobenius head) and activation family."""
    net = onn.Sequential(
        nn.Flatten(), onn.OrthoLinear(8, 16), onn.GroupSort(4), onn.SpectralLinear(16, 16),
        onn.MaxMin(), onn.OrthoLinear(16, 16), onn.FullSort(), onn.FrobeniusLinear(16, 1))
    _check_compiled(net, torch.randn(6, 8))


def test_compile_conv_aot_eager():
    """The conv layers through AOTAutograd without code generation (seconds): train-mode
    forward and backward, then eval, as inductor does in the slow test below."""
    net = onn.Sequential(
        onn.OrthoConv2d(2, 4, 3), onn.MaxMin(), onn.OrthoConv2d(4, 8, 3, stride=2),
        onn.GroupSort(2), onn.SpectralConv2d(8, 8, 3, input_size=(4, 4)), onn.MaxMin(),
        onn.SLLConv2d(8, 8), nn.Flatten(), onn.OrthoLinear(128, 3))
    _check_compiled(net, torch.randn(6, 2, 8, 8), backend="aot_eager")


@pytest.mark.slow
def test_compile_conv():
    """Orthogonal and spectral convolutions, pooling, an SLL block."""
    net = onn.Sequential(
        onn.OrthoConv2d(2, 4, 3), onn.GroupSort(2),
        onn.SpectralConv2d(4, 4, 3, input_size=(8, 8)), onn.MaxMin(),
        onn.SLLConv2d(4, 4), onn.ScaledAvgPool2d(2), nn.Flatten(), onn.OrthoLinear(64, 3))
    _check_compiled(net, torch.randn(6, 2, 8, 8))
