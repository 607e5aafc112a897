# SPDX-License-Identifier: MIT
r"""Lipschitz bounds of a model: the certified upper bound (:func:`lipschitz_bound`), a lower
bound by probing (:func:`estimate_lipschitz`), and the last linear layer of a sequential
model (:func:`split_last_linear`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onelip.nn import eval_mode
from onelip.nn.sequential import module_lipschitz_bound

__all__ = ["estimate_lipschitz", "lipschitz_bound", "split_last_linear"]


def split_last_linear(model: nn.Module) -> tuple[nn.Module, Tensor, Tensor | None] | None:
    """Split a sequential model into (body, W, b) if it ends in a linear layer, else None."""
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        return None
    last = model[-1]
    if hasattr(last, "effective_weight"):
        w = last.effective_weight()
    elif isinstance(last, nn.Linear):
        w = last.weight
    else:
        return None
    return nn.Sequential(*list(model)[:-1]), w.detach(), last.bias


@torch.no_grad()
def lipschitz_bound(model: nn.Module) -> float:
    """A certified upper bound of the model's L2 Lipschitz constant (eval mode)."""
    with eval_mode(model):
        return module_lipschitz_bound(model)


def estimate_lipschitz(model: nn.Module, x: Tensor, *, n_power: int = 30, n_ascent: int = 100,
                       lr: float = 0.01, seed: int = 0) -> float:
    r"""A *lower* bound of the L2 Lipschitz constant around the points ``x``, in the model's
    current mode.

    Max of two probes: (1) power iteration on :math:`J^\top J` at each point (via double
    backward), giving :math:`\|J(x)\|_2` and its top right singular vector :math:`v(x)`;
    (2) Adam ascent on :math:`\|f(a) - f(b)\| / \|a - b\|` over pairs started at
    :math:`a = x`, :math:`b = x + 0.05\,v(x)`, free to leave the data: on a piecewise-linear
    network the ratio climbs towards inputs whose Jacobian has a larger norm. Every value
    returned is a ratio (or a local Jacobian norm) actually attained: a valid lower bound
    (pairs closer than 1e-3 are not counted, where float rounding could pass for slope).

    Shape: x (N, *input_shape).
    """
    gen = torch.Generator().manual_seed(seed)
    x = x.detach()
    shape = (-1,) + (1,) * (x.dim() - 1)
    # (1) power iteration on JᵀJ, batched over points.
    v = torch.randn(x.shape, generator=gen).to(x)
    v = v / v.flatten(1).norm(dim=1).view(shape)
    best = 0.0
    # Note: plain autograd (J v by double backward), not torch.func: onelip layers update
    # persistent buffers in train mode, which torch.func transforms refuse to mutate.
    for _ in range(n_power):
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(xg)
            u = torch.zeros_like(out, requires_grad=True)
            (jtu,) = torch.autograd.grad(out, xg, u, create_graph=True)  # Jᵀu, linear in u
            (jvp,) = torch.autograd.grad(jtu, u, v)  # J v
            (jtjv,) = torch.autograd.grad(out, xg, jvp)  # JᵀJ v
        norms = jtjv.flatten(1).norm(dim=1).clamp_min(1e-30)
        best = max(best, float(jvp.detach().flatten(1).norm(dim=1).max()))
        v = jtjv.detach() / norms.detach().view(shape)
    # (2) gradient ascent on pairs, started along the top singular directions.
    a = x.clone().requires_grad_(True)
    b = (x + 0.05 * v).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=lr)
    for _ in range(n_ascent):
        with torch.enable_grad():
            num = (model(a) - model(b)).flatten(1).norm(dim=1)
            den = (a - b).flatten(1).norm(dim=1).clamp_min(1e-9)
            ratio = num / den
            # pairs closer than 1e-3 are left out: there float rounding of f(a) − f(b)
            # could pass for slope
            best = max(best, float(torch.where(den > 1e-3, ratio.detach(), 0.0).max()))
            opt.zero_grad()
            (-ratio.sum()).backward()
        opt.step()
    with torch.no_grad():  # the last step's pairs
        num = (model(a) - model(b)).flatten(1).norm(dim=1)
        den = (a - b).flatten(1).norm(dim=1)
        best = max(best, float(torch.where(den > 1e-3, num / den.clamp_min(1e-9), 0.0).max()))
    return best
