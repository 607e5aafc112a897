# SPDX-License-Identifier: MIT
"""The generic attacks, run over every public layer of the one layer table
(``tests/layer_table.py``): a layer enters the suite by its line there.

For each layer: the exact Jacobian (float64 arithmetic on the float32 weights as applied) is
within its bound in eval mode and in train mode after optimiser steps that push its norm up;
gradients reach every parameter; the export computes the eval-mode function; a state dict
round trip (through safetensors, as run folders store it) gives the same function in both
modes, hidden training state included; and a run interrupted after its first epoch resumes to
the uninterrupted run's weights, bit for bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
from layer_table import CASES, public_layers
from safetensors.torch import load, save
from torch import nn

import onelip.nn as onn
from onelip.losses import MulticlassHingeLoss
from onelip.nn.utils import eval_mode, export_tree, retract_
from onelip.train import TrainConfig, fit

NAMES = sorted(CASES)
TOL_EVAL = 1e-6  # the eval-mode bound is certified for the rounded weights: float64 Jacobian
STEPS = 4  # optimiser steps before the attacks
# ==== the table is complete ================================================================


def test_every_public_layer_is_in_the_table():
    layers = public_layers()
    missing, extra = sorted(set(layers) - set(CASES)), sorted(set(CASES) - set(layers))
    assert not missing, f"public layers missing from tests/layer_table.py: {missing}"
    assert not extra, f"tests/layer_table.py lists what is not a public layer: {extra}"
    for name, case in CASES.items():
        assert type(case.build()) is layers[name], name


def test_every_family_is_in_a_models_table():
    """Each ConstrainedLayer family of a shape class is one a model can choose by name."""
    families = set(onn.DENSE_LAYERS.values()) | set(onn.CONV_LAYERS.values())
    for name, cls in public_layers().items():
        if issubclass(cls, (onn.DenseLayer, onn.ConvLayer)) and cls is not onn.FrobeniusLinear:
            assert cls in families, f"{name} is in neither DENSE_LAYERS nor CONV_LAYERS"


# ==== helpers ===============================================================================


def _input(name: str, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*CASES[name].input_shape, generator=g)


def _jacobian_norm(f, x: torch.Tensor) -> float:
    """σ_max of the Jacobian of the whole-batch map at x (block diagonal for per-sample
    layers: the largest per-sample norm; the joint norm for batch-coupled ones)."""
    jac = torch.autograd.functional.jacobian(f, x)  # (*out, *in)
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()), ord=2))


def _trained(name: str) -> nn.Module:
    """The layer after STEPS Adam steps (lr 1e-2, retraction after each, as fit does) on an
    objective that pushes the norm of its output up."""
    torch.manual_seed(0)
    layer = CASES[name].build().train()
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2) if params else None
    for i in range(STEPS):
        x = _input(name, seed=10 + i)
        loss = -layer(x).square().sum()
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
            retract_(layer)
    return layer


# ==== the attacks ===========================================================================


@pytest.mark.parametrize("name", NAMES)
def test_eval_jacobian_within_bound_after_training(name):
    layer = _trained(name)
    with eval_mode(layer):
        bound = layer.lipschitz_bound()
        plain = export_tree(layer).double()  # exact arithmetic on the float32 weights applied
    x = _input(name).double()
    sigma = _jacobian_norm(plain, x)
    assert sigma <= bound * (1 + TOL_EVAL), f"{name}: σ_max {sigma!r} > bound {bound!r}"


@pytest.mark.parametrize("name", NAMES)
def test_train_jacobian_within_bound_after_training(name):
    layer = _trained(name)
    bound = layer.lipschitz_bound()
    x = _input(name)
    snapshot = copy.deepcopy(layer)  # the forward may move power-iteration state: measure one
    sigma = _jacobian_norm(lambda t: copy.deepcopy(snapshot)(t), x)
    tol = CASES[name].train_tol
    assert sigma <= bound * (1 + tol), f"{name} (train): σ_max {sigma!r} > {bound!r}·(1+{tol})"


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    layer = CASES[name].build().train()
    x = _input(name).requires_grad_(True)
    layer(x).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()), name
    for pname, p in layer.named_parameters():
        assert p.grad is not None, f"{name}.{pname} gets no gradient"
        assert bool(torch.isfinite(p.grad).all()), f"{name}.{pname}: non-finite gradient"
        assert bool(p.grad.abs().sum() > 0), f"{name}.{pname}: zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_export_computes_the_eval_function(name):
    layer = _trained(name)
    x = _input(name)
    plain = export_tree(layer)  # in train mode: export() is of the eval function anyway
    assert not any(isinstance(m, onn.ConstrainedLayer) for m in plain.modules()), name
    with eval_mode(layer):
        want = layer(x)
    got = plain.eval()(x)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), \
        f"{name}: export differs by {(got - want).abs().max().item():.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    """Through safetensors bytes (as run folders store it) into a fresh instance: the same
    function in eval mode, and the same *training* forward (hidden training state included:
    OrthoLinear's certified copies, SpectralConv2d's refresh position)."""
    layer = _trained(name)
    state = load(save({k: v.contiguous() for k, v in layer.state_dict().items()}))
    torch.manual_seed(123)
    fresh = CASES[name].build()
    fresh.load_state_dict(state)
    x = _input(name, seed=7)
    with eval_mode(layer), eval_mode(fresh):
        assert torch.equal(layer(x), fresh(x)), name
    layer.train(), fresh.train()
    for i in range(3):  # several training forwards: the state they advance stays in step
        xi = _input(name, seed=20 + i)
        assert torch.equal(layer(xi), fresh(xi)), f"{name}: training forward {i} differs"


def _resume_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    layer = CASES[name].build()
    with torch.no_grad():
        features = layer.eval()(_input(name)).flatten(1).shape[1]
    return nn.Sequential(layer.train(), nn.Flatten(), onn.OrthoLinear(features, 3))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", NAMES)
def test_resume_gives_the_uninterrupted_weights(name, tmp_path):
    n = 4 * CASES[name].input_shape[0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n * 2, *CASES[name].input_shape[1:], generator=g)
    y = torch.randint(0, 3, (n * 2,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    cfg = TrainConfig(epochs=2, batch_size=max(2, n // 4), lr=1e-2, seed=0)
    loss = MulticlassHingeLoss(margin=0.5)
    ref = _resume_model(name)
    fit(ref, data, loss, cfg, progress=False, final_test=False)

    def stop(record):
        if record["epoch"] == 1:
            raise _Stop

    cut = _resume_model(name)
    with pytest.raises(_Stop):
        fit(cut, data, loss, cfg, progress=False, final_test=False,
            checkpoint_dir=tmp_path / "ckpt", on_epoch=stop)
    resumed = _resume_model(name)
    torch.manual_seed(999)  # the resumed run must not depend on the global RNG
    fit(resumed, data, loss, cfg, progress=False, final_test=False,
        resume_from=tmp_path / "ckpt")
    a, b = ref.state_dict(), resumed.state_dict()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{name}: resumed weights differ from the uninterrupted run's: {diff}"


WEIGHTED = [n for n in NAMES if isinstance(CASES[n].build(), onn.ConstrainedLayer)]


@pytest.mark.parametrize("name", WEIGHTED)
def test_weights_under_autocast_are_the_full_precision_ones(name):
    """Under an ambient bf16 autocast (``--amp``) a constrained layer applies, bit for bit, the
    eval weight its bound was proved for; a layer of ``full_precision_forward`` runs in
    float32 (its output is float32)."""
    layer = _trained(name).eval()
    ref = layer.eval_weight()
    layer.clear_cache()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer.eval_weight()
        out = layer(_input(name))
    for r, g in zip(*(w if isinstance(w, tuple) else (w,) for w in (ref, got))):
        if isinstance(r, torch.Tensor):
            assert g.dtype == r.dtype == torch.float32 and torch.equal(g, r), name
        else:
            assert g == r, name
    if layer.full_precision_forward:
        assert out.dtype == torch.float32, name
