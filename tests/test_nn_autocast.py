# SPDX-License-Identifier: MIT
"""Under an ambient bf16 autocast (``--amp``) the constraint math stays in full precision: the
weights a layer applies are the ones its bound was proved for, bit for bit, in train and eval
mode; dense and residual layers run wholly in float32; OrthoConv2d convolves under autocast
with a float32-built kernel. Checked with CPU autocast (the same mechanism as CUDA's)."""

from __future__ import annotations

import pytest
import torch

import onelip.nn as onn

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _layers():
    torch.manual_seed(0)
    return {
        "OrthoLinear": (onn.OrthoLinear(24, 16), (5, 24)),
        "SpectralLinear": (onn.SpectralLinear(24, 16), (5, 24)),
        "FrobeniusLinear": (onn.FrobeniusLinear(24, 1), (5, 24)),
        "SLLBlock": (onn.SLLBlock(16, 32), (5, 16)),
        "SLLConv2d": (onn.SLLConv2d(4, 8), (2, 4, 6, 6)),
        "ConvexResidual": (onn.ConvexResidual(onn.OrthoLinear(16, 16)), (5, 16)),
        "OrthoConv2d": (onn.OrthoConv2d(4, 8, 3), (2, 4, 6, 6)),
        "OrthoConv2d-stride": (onn.OrthoConv2d(4, 8, 3, stride=2), (2, 4, 6, 6)),
        "SpectralConv2d": (onn.SpectralConv2d(4, 8, 3, input_size=(6, 6)), (2, 4, 6, 6)),
    }


NAMES = list(_layers())


def _weights(layer):
    """The weights a layer applies, as it computes them for its forward."""
    if isinstance(layer, onn.OrthoConv2d):
        return [layer._train_kernel() if layer.training else layer.effective_weight()]
    if isinstance(layer, onn.SpectralConv2d):
        return [layer.effective_weight()]
    if hasattr(layer, "effective_weights"):
        return list(layer.effective_weights())
    if hasattr(layer, "effective_weight"):
        return [layer.effective_weight()]
    return []


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_weights_under_autocast_are_the_full_precision_ones(name, mode):
    layer, _ = _layers()[name]
    layer.train(mode == "train")
    ref = [w.detach().clone() for w in _weights(layer)]
    layer.clear_cache()
    with torch.autocast(**BF16):
        got = _weights(layer)
    for r, g in zip(ref, got):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, r, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", [n for n in NAMES if "Conv2d" not in n or "SLL" in n])
def test_dense_and_residual_layers_run_in_float32_under_autocast(name, mode):
    layer, shape = _layers()[name]
    layer.train(mode == "train")
    torch.manual_seed(1)
    x = torch.randn(shape)
    ref = layer(x)
    layer.clear_cache()
    with torch.autocast(**BF16):
        out = layer(x.bfloat16())
    assert out.dtype == torch.float32
    # the input was rounded to bf16 first: compare with the same rounded input, in float32
    layer.clear_cache()
    torch.testing.assert_close(out, layer(x.bfloat16().float()), rtol=1e-5, atol=1e-6)
    assert (out - ref).abs().max() < 0.05, "the same function up to the input's rounding"


def test_ortho_conv_convolves_under_autocast_with_a_full_precision_kernel():
    layer, shape = _layers()["OrthoConv2d"]
    layer.train()
    x = torch.randn(shape)
    with torch.autocast(**BF16):
        out = layer(x)
        k = layer._train_kernel()
    assert out.dtype == torch.bfloat16, "the convolution itself is the autocast one"
    # the kernel is orthogonal to float32 precision, not bf16's 1e-2
    flat = k.detach().double().reshape(k.shape[0], -1)
    sigma = torch.linalg.matrix_norm(flat, ord=2)
    assert sigma <= 1 + 1e-5


def test_spectral_linear_trains_under_autocast():
    """Regression: its power iteration mixed bf16 and float32 (``dot`` raised)."""
    layer = onn.SpectralLinear(8, 8)
    layer.train()
    with torch.autocast(**BF16):
        y = layer(torch.randn(3, 8))
    y.sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
