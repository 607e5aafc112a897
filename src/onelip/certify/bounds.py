# SPDX-License-Identifier: MIT
r"""Lipschitz bounds of a model: the certified upper bound (:func:`lipschitz_bound`), a lower
bound by probing (:func:`estimate_lipschitz`), and the last linear layer of a sequential
model (:func:`split_last_linear`)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from onelip.certify._inputs import no_autocast_for
from onelip.nn import DenseLayer, check_bound_applies
from onelip.nn.sequential import module_lipschitz_bound
from onelip.nn.utils import eval_mode, export_tree

__all__ = ["estimate_lipschitz", "lipschitz_bound", "split_last_linear"]

# Relative allowance for float64 rounding in estimate_lipschitz: some 10^6 unit roundings
# (2^-53 each), orders of magnitude more than a forward pass accumulates.
_F64_SLACK = 1e-10


def split_last_linear(model: nn.Module) -> tuple[nn.Module, Tensor, Tensor | None] | None:
    """Split a sequential model into (body, W, b) if it ends in a linear layer, else None: an
    ``nn.Linear`` (its weight) or a :class:`~onelip.nn.DenseLayer` (its certified eval-mode
    weight, :meth:`~onelip.nn.ConstrainedLayer.eval_weight`, in either mode), W of shape
    (out, in).

    Only a container whose ``forward`` is ``nn.Sequential``'s (the composition of its
    children) splits: one with a ``forward`` of its own and a restated bound gives None, one
    that inherits the bound for another ``forward`` is refused
    (:func:`~onelip.nn.check_bound_applies`).

    Raises:
        TypeError: ``model`` overrides ``forward`` but inherits ``lipschitz_bound``.
    """
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        return None
    check_bound_applies(model)  # a plain nn.Sequential states no bound: nothing to check
    if type(model).forward is not nn.Sequential.forward:
        return None  # not the composition of its children: body @ W is another function
    last = model[-1]
    if isinstance(last, DenseLayer):  # applies its certified weight (out, in) as nn.Linear
        w = last.eval_weight()
    elif isinstance(last, nn.Linear):
        w = last.weight
    else:
        return None
    return nn.Sequential(*list(model)[:-1]), w.detach(), last.bias


@torch.no_grad()
def lipschitz_bound(model: nn.Module) -> float:
    """A certified upper bound of the model's L2 Lipschitz constant (eval mode), computed with
    any ambient ``torch.autocast`` switched off (see :mod:`onelip.certify`)."""
    with eval_mode(model), no_autocast_for(*model.parameters(), *model.buffers()):
        return module_lipschitz_bound(model)


def _jvp_and_jtjv(model: nn.Module, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(J v, JᵀJ v) of ``model`` at the points ``x``, batched, by double backward.

    Plain autograd rather than torch.func: onelip layers update persistent buffers in train
    mode, which torch.func transforms refuse to mutate.
    """
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xg)
        u = torch.zeros_like(out, requires_grad=True)
        (jtu,) = torch.autograd.grad(out, xg, u, create_graph=True)  # Jᵀu, linear in u
        (jv,) = torch.autograd.grad(jtu, u, v)  # J v
        (jtjv,) = torch.autograd.grad(out, xg, jv)  # JᵀJ v
    return jv.detach(), jtjv.detach()


@torch.no_grad()
def _float64_copy(model: nn.Module, in_train: bool) -> nn.Module:
    """The function :func:`estimate_lipschitz` bounds, in float64 (see there)."""
    exact = None
    if not in_train:
        try:  # plain layers holding the weights as applied, cast exactly to float64
            exact = export_tree(model).eval()
        except TypeError:  # not exportable: recompute in float64 below
            exact = None
    if exact is None:
        exact = copy.deepcopy(model)
    return exact.double().requires_grad_(False)


def _norms(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def estimate_lipschitz(model: nn.Module, x: Tensor, *, n_power: int = 30, n_ascent: int = 100,
                       lr: float = 0.01, seed: int = 0) -> float:
    r"""A *lower* bound of the L2 Lipschitz constant of ``model``, found around the points
    ``x``, in the model's current mode.

    **What it bounds.** In eval mode: the Lipschitz constant of the network as applied, i.e.
    the exact-arithmetic function of the weights the model applies (constrained layers'
    rounded float32 weights, as :func:`onelip.nn.export_tree` folds them), which is what
    :func:`lipschitz_bound` bounds from above; so it never exceeds :func:`lipschitz_bound`.
    (A model that cannot be exported, or one with a submodule in train mode: the model's
    function recomputed in float64 from its parameters, ``copy.deepcopy(model).double()``.)

    Every value it can return is attained by that function and computed in float64 (the
    weights and points cast exactly), then lowered by a relative :math:`10^{-10}` (a ratio
    also by :math:`10^{-10}(\|f(a)\| + \|f(b)\|)/\|a - b\|`), far more than float64
    rounding of a forward pass: rounding cannot lift it above the constant. (Ratios of float32
    outputs can: :math:`f(a) - f(b)` of nearly equal outputs carries a rounding error of
    about :math:`10^{-7}\|f\|`, which divided by a small :math:`\|a - b\|` passes for slope.)

    **How the points are found**, in the model's own dtype (on a copy in train mode, so that
    the caller's buffers are left as they were; no ``.grad`` is written): (1) power iteration
    on :math:`J^\top J` at each point (double backward) gives the top right singular vector
    :math:`v(x)`; (2) Adam ascent on :math:`\|f(a) - f(b)\| / \|a - b\|` over pairs started
    at :math:`a = x`, :math:`b = x + 0.05\,v(x)`, free to leave the data (on a
    piecewise-linear network the ratio climbs towards inputs whose Jacobian has a larger
    norm). Then, in float64: :math:`\|J(x)\,v(x)\|` at each point and the ratio of each
    point's best pair and of its last pair; the result is the largest of these.

    In train mode a layer whose forward updates state (a power-iteration vector) is evaluated
    at its state of each call; a ratio's two points go through one forward.

    Shape: x (N, *input_shape), N >= 1.

    Raises:
        ValueError: ``x`` holds no point.
    """
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"estimate_lipschitz needs a batch of at least one point, shape "
                         f"(N, *input_shape) with N >= 1; got shape {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(seed)
    x = x.detach()
    shape = (-1,) + (1,) * (x.dim() - 1)
    in_train = any(m.training for m in model.modules())
    # The search runs on the model itself in eval mode (its forward changes nothing there), on
    # a copy in train mode (where forwards update buffers).
    probe = copy.deepcopy(model) if in_train else model
    # (1) power iteration on JᵀJ, batched over points.
    v = torch.randn(x.shape, generator=gen).to(x)
    v = v / _norms(v).view(shape)
    for _ in range(n_power):
        _, jtjv = _jvp_and_jtjv(probe, x, v)
        v = jtjv / _norms(jtjv).clamp_min(1e-30).view(shape)
    # (2) gradient ascent on pairs, started along the top singular directions; each point's
    # best pair (by the probe's own ratio, pairs at least 1e-3 apart) is kept for step (3).
    a = x.clone().requires_grad_(True)
    b = (x + 0.05 * v).requires_grad_(True)
    best_a, best_b = a.detach().clone(), b.detach().clone()
    best_ratio = torch.full((x.shape[0],), -1.0, device=x.device)
    opt = torch.optim.Adam([a, b], lr=lr)
    for _ in range(n_ascent):
        with torch.enable_grad():
            ratio = _norms(probe(a) - probe(b)) / _norms(a - b).clamp_min(1e-9)
            grads = torch.autograd.grad(-ratio.sum(), [a, b])
        with torch.no_grad():
            better = (_norms(a - b) > 1e-3) & (ratio.detach() > best_ratio)
            best_ratio = torch.where(better, ratio.detach(), best_ratio)
            best_a = torch.where(better.view(shape), a, best_a)
            best_b = torch.where(better.view(shape), b, best_b)
        a.grad, b.grad = grads
        opt.step()
    # (3) every reported value: computed in float64 on a float64 copy, lowered by the slack.
    exact = _float64_copy(model, in_train)
    x64, v64 = x.double(), v.detach().double()
    v64 = v64 / _norms(v64).clamp_min(1e-300).view(shape)
    jv, _ = _jvp_and_jtjv(exact, x64, v64)
    best = float(_norms(jv).max()) * (1 - _F64_SLACK)
    with torch.no_grad():
        for pa, pb in ((best_a, best_b), (a.detach(), b.detach())):
            pa, pb = pa.double(), pb.double()
            fa, fb = exact(torch.cat([pa, pb])).tensor_split(2)
            den = _norms(pa - pb)
            num = _norms(fa - fb) - _F64_SLACK * (_norms(fa) + _norms(fb))
            ratio = torch.where(den > 0, num / den.clamp_min(1e-300), 0.0) * (1 - _F64_SLACK)
            best = max(best, float(ratio.max()))
    return max(best, 0.0)
