# SPDX-License-Identifier: MIT
"""The training forward's own operator stays ≤ 1 in float32 (issue 23, item 5).

``OrthoLinear.retract_()`` left a float32 latent with σ_max up to 1 + 3e-7, which the training
forward applies as it is; SLL blocks in train mode computed their scaling T⁻¹ in float32, 1 +
4e-8 above the bound where the Gershgorin bound is tight. Eval mode and certificates were
fine (their float64 math and cast margin); these tests measure, in float64, σ_max of the
operator that the *training* forward applies with its float32 weights.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from onelip import nn as onn

TOL_F64 = 1e-12  # the float64 SVD that measures σ_max (an exact reflection reads 1 + 4e-16)
SHAPES = [(64, 1), (1, 64), (3, 7), (7, 3), (2, 2), (16, 16), (10, 64), (64, 10)]  # (out, in)


def _sigma(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.detach().double(), ord=2))


@pytest.mark.parametrize("out_f,in_f", SHAPES)
def test_ortho_linear_retraction_leaves_sigma_at_most_one(out_f, in_f):
    gen = torch.Generator().manual_seed(out_f * 100 + in_f)
    layer = onn.OrthoLinear(in_f, out_f)
    worst = 0.0
    for trial in range(6):
        q = torch.linalg.qr(torch.randn(max(out_f, in_f), min(out_f, in_f),
                                        generator=gen))[0]
        q = q if out_f >= in_f else q.mT
        for size in (1e-5, 1e-3, 1e-1):
            with torch.no_grad():
                layer.weight.copy_(q + size * torch.randn(q.shape, generator=gen)
                                   / max(out_f, in_f) ** 0.5)
            layer.retract_()
            worst = max(worst, _sigma(layer.weight))
            assert layer._retracted()  # the training forward applies this latent as it is
    assert worst <= 1 + TOL_F64, f"{out_f}x{in_f}: sigma_max of the latent - 1 = {worst - 1}"
    assert worst >= 1 - 1e-4  # tight still: the margin is a rounding margin


def test_ortho_linear_stays_at_most_one_through_adam_steps():
    torch.manual_seed(1)
    layer = onn.OrthoLinear(24, 12).train()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(64, 24)
    for _ in range(20):
        loss = -layer(x).norm()  # pushes the gain up
        opt.zero_grad()
        loss.backward()
        opt.step()
        layer.retract_()
        assert _sigma(layer.weight) <= 1 + TOL_F64
        with torch.no_grad():  # the training forward's operator is the latent
            op = layer(torch.eye(24)) - layer(torch.zeros(1, 24))
        assert _sigma(op) <= 1.0 + 1e-6  # the forward's own float32 arithmetic


def _sll_dense_operator(block: onn.SLLBlock) -> torch.Tensor:
    """I − 2 W diag(t ⊙ D) Wᵀ of the training forward, all units active (D = 1), in float64
    from its float32 W and t."""
    w = block.weight.detach().double()
    t = block.train()._t_inv().detach().double()
    return torch.eye(w.shape[0], dtype=torch.float64) - 2 * (w * t) @ w.mT


def test_sll_block_train_forward_applies_that_operator():
    block = onn.SLLBlock(6, 3).double().train()
    with torch.no_grad():
        block.bias.fill_(10.0)  # every unit active: the forward is affine
        x = torch.randn(4, 6, dtype=torch.float64)
        y = block(x) - block(torch.zeros(1, 6, dtype=torch.float64))
    assert torch.allclose(y, x @ _sll_dense_operator(block).mT, atol=1e-12)


def _sll_conv_operator(block: onn.SLLConv2d, size: int) -> torch.Tensor:
    """x ↦ x − 2 T_Kᵀ(t ⊙ T_K x) of the training forward (all units active), in float64
    from its float32 K and t."""
    k = block.weight.detach().double()
    t = block._t_inv().detach().double()
    c, p = block.channels, block.padding
    basis = torch.eye(c * size * size, dtype=torch.float64).reshape(-1, c, size, size)
    h = TF.conv2d(basis, k, padding=p) * t[:, None, None]
    out = basis - 2 * TF.conv_transpose2d(h, k, padding=p)
    return out.reshape(len(basis), -1).mT


@pytest.mark.parametrize("features", [3, 16, 40])
def test_sll_block_train_operator_at_most_one_where_the_bound_is_tight(features):
    """One inner unit: T = ‖w‖², so the block is the reflection I − 2wwᵀ/‖w‖² (σ = 1 exactly)
    and any rounding of T⁻¹ upwards shows."""
    gen = torch.Generator().manual_seed(features)
    block = onn.SLLBlock(features, 1)
    for _ in range(40):
        with torch.no_grad():
            block.weight.copy_(torch.randn(features, 1, generator=gen))
            block.log_q.normal_(generator=gen)
        s = _sigma(_sll_dense_operator(block))
        assert 1 - 1e-5 <= s <= 1 + TOL_F64, f"sigma_max - 1 = {s - 1}"


@pytest.mark.parametrize("channels", [3, 8])
def test_sll_conv_train_operator_at_most_one_where_the_bound_is_tight(channels):
    gen = torch.Generator().manual_seed(channels)
    block = onn.SLLConv2d(channels, 1, kernel_size=1)
    for _ in range(40):
        with torch.no_grad():
            block.weight.copy_(torch.randn(1, channels, 1, 1, generator=gen))
        s = _sigma(_sll_conv_operator(block, 2))
        assert 1 - 1e-5 <= s <= 1 + TOL_F64, f"sigma_max - 1 = {s - 1}"


def test_sll_conv_train_operator_after_adam_steps():
    torch.manual_seed(2)
    block = onn.SLLConv2d(4, 6).train()
    opt = torch.optim.Adam(block.parameters(), lr=1e-2)
    x = torch.randn(8, 4, 5, 5)
    for _ in range(15):
        loss = -(block(x) - x).norm()  # pushes the residual branch to its bound
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _sigma(_sll_conv_operator(block, 5)) <= 1 + TOL_F64
