# SPDX-License-Identifier: MIT
"""The layer author's contract (onelip.nn.ConstrainedLayer): a family that defines only its
weight as applied, its training weight, its bound and its shape class gets the eval cache and
its invalidation, export, the input check, autocast handling and the bound check for free.
The toy family below is the worked example of docs/architecture.md (an AOL dense layer)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

import onelip.nn as onn
from onelip._io import check_state_dict
from onelip.nn import DenseLayer, check_bound_applies
from onelip.nn.utils import eval_mode, export_tree, retract_


def aol_scale(w: Tensor) -> Tensor:
    """d with d_i = (Σ_j |WᵀW|_ij)^(-1/2): σ_max(W diag(d)) ≤ 1 (Prach & Lampert 2022)."""
    return (w.mT @ w).abs().sum(1).clamp_min(1e-12).rsqrt()


class AOLLinear(DenseLayer):
    """y = W diag(d) x + b, the whole family in the contract's terms."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True) -> None:
        super().__init__()
        self._init_dense(in_features, out_features, bias=bias)
        nn.init.orthogonal_(self.weight)
        self.builds = 0  # how often the eval weight was built (the cache test)

    def train_weight(self) -> Tensor:
        return self.weight * aol_scale(self.weight)

    def applied_weight(self) -> Tensor:
        self.builds += 1
        w64 = self.weight.detach().double()
        return self.cast_unit(w64 * aol_scale(w64))

    def lipschitz_bound(self) -> float:
        return 1.0  # AOL: σ_max(W diag(d)) ≤ 1; eval: the rounding by cast_unit


def _norm(f, x: Tensor) -> float:
    jac = torch.autograd.functional.jacobian(f, x)
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), ord=2))


def test_a_family_of_four_methods_is_a_full_layer():
    torch.manual_seed(0)
    layer = AOLLinear(6, 4)
    with torch.no_grad():
        layer.weight.mul_(3).add_(torch.randn(4, 6))  # far from orthogonal: AOL rescales
    x = torch.randn(3, 6)
    # eval: cached (one build for many forwards), exact bound on the rounded weight
    layer.eval()
    y = layer(x)
    layer(x)
    assert layer.builds == 1
    assert _norm(export_tree(layer).double(), x.double()) <= 1.0
    # export: a plain nn.Linear computing the same function
    plain = layer.export()
    assert type(plain) is nn.Linear and torch.allclose(plain(x), y, atol=1e-6)
    # an optimiser step invalidates the cache
    layer.train()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).square().sum().backward()
    opt.step()
    layer.eval()
    assert not torch.allclose(layer(x), y)
    assert layer.builds == 2
    # training forward: differentiable, 1-Lipschitz
    layer.train()
    assert _norm(layer, x) <= 1 + 1e-5
    # the input check, one line
    with pytest.raises(ValueError, match="last dimension 6"):
        layer(torch.randn(2, 5))
    # a state dict round trip, deepcopy
    other = AOLLinear(6, 4)
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other.eval()(x), copy.deepcopy(layer).eval()(x))
    retract_(layer)  # no retract_(): left alone
    check_bound_applies(layer)


def test_full_precision_forward_under_autocast():
    layer = AOLLinear(8, 8).eval()
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32 and torch.allclose(y, layer(x))


def test_overriding_what_the_bound_depends_on_needs_a_new_bound():
    class Louder(AOLLinear):
        def apply_weight(self, x, weight):
            return 10 * super().apply_weight(x, weight)

    with pytest.raises(TypeError, match="overrides apply_weight"):
        check_bound_applies(Louder(3, 3))

    class Bigger(AOLLinear):
        def applied_weight(self):
            return 2 * super().applied_weight()

    with pytest.raises(TypeError, match="overrides applied_weight"):
        check_bound_applies(Bigger(3, 3))


def test_a_family_without_its_weight_or_bound_cannot_be_built():
    class NoBound(DenseLayer):
        def applied_weight(self):
            return self.weight

    class NoWeight(DenseLayer):
        def lipschitz_bound(self):
            return 1.0

    for cls in (NoBound, NoWeight):
        with pytest.raises(TypeError, match="abstract"):
            cls()


def test_state_dicts_written_before_the_hidden_state_still_load():
    """0.2 files have no ``_extra_state``: they load (strict), and the run folder check
    accepts them; the layer then simply has no certified copy to reuse."""
    torch.manual_seed(0)
    net = onn.Sequential(onn.OrthoLinear(4, 4), onn.SpectralConv2d(1, 1, 3, input_size=(2, 2)))
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("_extra_state")}
    assert len(state) < len(net.state_dict())
    fresh = onn.Sequential(onn.OrthoLinear(4, 4), onn.SpectralConv2d(1, 1, 3,
                                                                      input_size=(2, 2)))
    fresh.load_state_dict(state)  # strict
    check_state_dict(state, fresh.state_dict(), source="old.safetensors")
    assert torch.equal(fresh[0].weight, net[0].weight)


def test_hidden_state_is_restored_only_for_its_own_latent():
    """OrthoLinear's saved flag "this latent is certified" names the latent by its digest: a
    state dict whose weight was edited after saving does not get the fast path."""
    torch.manual_seed(0)
    layer = onn.OrthoLinear(5, 5)
    assert layer._retracted()
    state = layer.state_dict()
    state["weight"] = state["weight"] * 3  # σ = 3: must not be applied as it is in training
    fresh = onn.OrthoLinear(5, 5)
    fresh.load_state_dict(state)
    assert not fresh._retracted()
    x = torch.randn(2, 5)
    assert _norm(fresh.train(), x) <= 1 + 1e-5


def test_the_moved_utilities_still_import_from_onelip_nn_with_a_warning():
    from onelip.nn import utils

    for name in ("retract_", "eval_mode", "export_tree", "full_precision", "float32_forward",
                 "batched_kernel_build", "serial_kernel_build"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = getattr(onn, name)
        assert obj is getattr(utils, name)
        assert any(issubclass(w.category, DeprecationWarning) and "onelip.nn.utils" in
                   str(w.message) for w in caught), name
    with pytest.raises(AttributeError):
        onn.no_such_thing  # noqa: B018


def test_export_tree_unwraps_torch_compile_by_type():
    net = onn.Sequential(onn.OrthoLinear(3, 3))
    compiled = torch.compile(net)
    plain = export_tree(compiled)
    assert type(plain) is nn.Sequential and type(plain[0]) is nn.Linear

    class NotCompiled(nn.Module):  # has an _orig_mod, but is not torch.compile's wrapper
        def __init__(self):
            super().__init__()
            self._orig_mod = nn.Linear(2, 2)

    assert type(export_tree(NotCompiled())) is NotCompiled  # copied, not unwrapped by name
    with eval_mode(net):
        x = torch.randn(2, 3)
        assert torch.allclose(plain(x), net(x), atol=1e-6)


def test_export_keeps_the_dtype_of_a_float64_model():
    """A float64 model exports float64 plain layers (Normalize exported a float32 conv)."""
    net = onn.Sequential(onn.Normalize([0.5, 0.5], [0.25, 0.5]), onn.OrthoConv2d(2, 2),
                         onn.Flatten(), onn.OrthoLinear(2 * 4 * 4, 3)).double().eval()
    plain = export_tree(net)
    assert {p.dtype for p in plain.parameters()} == {torch.float64}
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    assert torch.allclose(plain(x), net(x), atol=1e-12)
