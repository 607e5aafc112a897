# SPDX-License-Identifier: MIT
"""Batched kernel builds (issue 11, "GPU speed"): every OrthoConv2d of a network built in a few
batched operations (:func:`onelip.nn.batched_kernel_build`) and retracted together
(:func:`onelip.nn.retract_`). The claims attacked: the same function and gradients as the
layer-by-layer build, the same 1-Lipschitz operator in training mode after training steps (in
float32 as applied), a rebuild whenever a latent or the grad mode changed, and far fewer
operations (the point of it, counted, not timed)."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from onelip import functional as F
from onelip.nn import MaxMin, OrthoConv2d
from onelip.nn.utils import batched_kernel_build, retract_
from onelip.train import TrainConfig, fit


def _net(dtype=torch.float64, seed=0):
    """On 12×12 inputs: groups of like layers (three 4→4 3×3; two 8→8 1×1, no projectors;
    two 8→8 2×2 stride 2, an RKO factor) and lone layers (3→4; 4→8 4×4 stride 2; 8→6 5×5,
    fewer outputs than inputs)."""
    torch.manual_seed(seed)
    layers = [OrthoConv2d(3, 4), OrthoConv2d(4, 4), MaxMin(), OrthoConv2d(4, 4),
              OrthoConv2d(4, 4), OrthoConv2d(4, 8, 4, stride=2), OrthoConv2d(8, 8, 1),
              MaxMin(), OrthoConv2d(8, 8, 1), OrthoConv2d(8, 8, 2, stride=2),
              OrthoConv2d(8, 8, 2, stride=2), OrthoConv2d(8, 6, 5)]
    return torch.nn.Sequential(*layers).to(dtype).train()


def _convs(net):
    return [m for m in net.modules() if isinstance(m, OrthoConv2d)]


def _forward_backward(net, x, batched):
    for p in net.parameters():
        p.grad = None
    if batched:
        with batched_kernel_build(net):
            y = net(x)
    else:
        y = net(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    return y.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_build_same_function_and_gradients(dtype):
    net = _net(dtype)
    x = torch.randn(2, 3, 12, 12, dtype=dtype)
    y0, g0 = _forward_backward(net, x, batched=False)
    y1, g1 = _forward_backward(net, x, batched=True)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(y0, y1, atol=tol, rtol=0)
    for a, b in zip(g0, g1):
        assert b is not None and torch.allclose(a, b, atol=tol * 10, rtol=tol), \
            float((a - b).abs().max())


def test_batched_build_uses_one_build_per_group(monkeypatch):
    import onelip.nn._kernels as conv

    sizes = []
    real = conv._build_group
    monkeypatch.setattr(conv, "_build_group", lambda g: sizes.append(len(g)) or real(g))
    net = _net()
    with batched_kernel_build(net):
        net(torch.randn(1, 3, 12, 12, dtype=torch.float64))
        net(torch.randn(1, 3, 12, 12, dtype=torch.float64))  # reused: no new build
    keys = {}
    for m in _convs(net):
        keys.setdefault(m._batch_key(), []).append(m)
    assert sorted(sizes) == sorted(len(g) for g in keys.values())
    assert max(sizes) == 3 and sum(sizes) == len(_convs(net))


def _aten_ops(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def test_batched_build_runs_far_fewer_operations():
    """Five like layers (a lipconvnet block): the batched build runs one group's operations,
    about a fifth of the per-layer builds' (forward and backward)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[OrthoConv2d(8, 8) for _ in range(5)]).train()
    convs = _convs(net)

    def build(batched):
        def run():
            if batched:
                with batched_kernel_build(net):
                    ks = [m._train_kernel() for m in convs]
            else:
                ks = [m._train_kernel() for m in convs]
            torch.stack(ks).sum().backward()
        return run

    serial, batched = _aten_ops(build(False)), _aten_ops(build(True))
    assert batched < serial / 3, (serial, batched)


def test_batched_build_is_one_lipschitz_after_training_in_float32():
    """After Adam steps that push the norm up (batched forwards, batched retractions), every
    training-mode kernel the batch applies is an orthogonal convolution: its certified norm on
    the input size at hand is ≤ 1 + 1e-5 in float64 on the float32 kernel, and ≥ 1 - 1e-5."""
    net = _net(torch.float32, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(15):
        x = torch.randn(4, 3, 12, 12)
        with batched_kernel_build(net):
            loss = -net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        retract_(net)
    sizes = {}
    h = 12
    for m in _convs(net):  # the input size each layer sees
        sizes[id(m)] = (h, h)
        h = (h + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
    with batched_kernel_build(net), torch.no_grad():
        for m in _convs(net):
            k = m._train_kernel()
            assert k.dtype == torch.float32
            bound = float(F.conv2d_operator_norm_bound(k.double(), sizes[id(m)],
                                                       stride=m.stride[0],
                                                       padding=m.padding[0]))
            circ = float(F.conv2d_infinite_norm_bound(k, stride=m.stride[0]))
            assert bound <= 1 + 1e-5 and circ <= 1 + 1e-5, (m, bound, circ)
            assert circ >= 1 - 1e-5  # orthogonal, not merely a contraction
    # and the eval-mode layers (certified kernels) are unchanged by all this
    net.eval()
    x = torch.randn(2, 3, 12, 12)
    y = net(x)
    with batched_kernel_build(net):
        assert torch.equal(net(x), y)


def test_batched_build_rebuilds_after_a_change_and_in_grad_mode():
    net = _net()
    conv = _convs(net)[1]
    x = torch.randn(1, 3, 12, 12, dtype=torch.float64)
    with batched_kernel_build(net):
        with torch.no_grad():
            k0 = conv._train_kernel()
        k1 = conv._train_kernel()  # grad mode on: built again, with a graph
        assert k0.grad_fn is None and k1.grad_fn is not None
        with torch.no_grad():
            conv.mix.add_(0.3 * torch.randn_like(conv.mix))  # an in-place change in the block
        k2 = conv._train_kernel()
        fresh = conv._kernel(exact=False)
        assert not torch.allclose(k1, k2) and torch.allclose(k2, fresh, atol=1e-12)
        net(x).sum().backward()
    assert all(p.grad is not None for p in conv.parameters())


def test_batched_retract_equals_per_layer_and_keeps_the_function():
    net = _net(seed=3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    other = _net(seed=3)
    other.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    before = net.eval()(x)
    net.train()
    retract_(net)  # batched per group
    for m in _convs(other):
        OrthoConv2d.retract_(m)  # one layer at a time
    for a, b in zip(net.state_dict().values(), other.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(net.eval()(x), before, atol=1e-10)
    for m in _convs(net):  # the latents are now orthonormal
        for p in m._cache_sources():
            a = p if p.shape[-2] >= p.shape[-1] else p.mT
            eye = torch.eye(a.shape[-1], dtype=a.dtype)
            assert torch.allclose(a.mT @ a, eye.expand_as(a.mT @ a), atol=1e-12)


def test_fit_with_batched_kernels_follows_the_per_layer_trajectory(monkeypatch):
    """fit builds the kernels batched; patched to build them layer by layer, it ends at the
    same weights (float32 rounding apart)."""
    import contextlib

    import onelip.train as train

    torch.manual_seed(0)
    x = torch.rand(48, 3 * 8 * 8)
    y = torch.randint(0, 3, (48,))

    def run():
        torch.manual_seed(1)
        net = torch.nn.Sequential(
            torch.nn.Unflatten(1, (3, 8, 8)), OrthoConv2d(3, 4), MaxMin(), OrthoConv2d(4, 4),
            MaxMin(), OrthoConv2d(4, 4), torch.nn.Flatten(), torch.nn.Linear(4 * 64, 3))
        fit(net, (x, y), torch.nn.CrossEntropyLoss(),
            TrainConfig(epochs=2, batch_size=16, lr=1e-2, seed=0), progress=False)
        return net.state_dict()

    batched = run()
    monkeypatch.setattr(train, "batched_kernel_build", lambda model: contextlib.nullcontext())
    per_layer = run()
    for k in batched:
        assert torch.allclose(batched[k], per_layer[k], atol=1e-5), k
