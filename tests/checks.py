# SPDX-License-Identifier: MIT
"""Shared probes that try to break a Lipschitz claim, for any callable ``f``.

Every helper takes a callable ``f`` that maps a *batch* ``(N, *input_shape)`` to a batch
``(N, *output_shape)`` (a layer, a model, a lambda) and the ``input_shape`` of one sample, so
the same probes serve dense layers (``input_shape=(d,)``) and convolutions
(``input_shape=(C, H, W)``). Inputs are built in ``dtype`` (default float32); pass
``torch.float64`` together with a ``.double()`` module for tight checks.

Probes, from exact to empirical:

* :func:`operator_matrix` / :func:`exact_singular_values`: the whole linear operator from one
  batched call on the impulse basis (exact for affine ``f``, including stateful layers whose
  operator changes between calls), or the Jacobian at a point (autograd: ``torch.func``
  refuses the buffer updates of train-mode layers).
* :func:`max_local_jacobian_norm`: the exact spectral norm of the Jacobian at random points
  (for piecewise-linear networks: the Lipschitz constant is the sup of these).
* :func:`jacobian_power_iteration`: power iteration on :math:`J^\\top J` (autograd), for
  inputs too large for a dense Jacobian. A lower bound of :math:`\\|J(x)\\|_2`.
* :func:`adversarial_lipschitz_ratio`: gradient ascent (Adam) on
  :math:`\\|f(x)-f(y)\\| / \\|x-y\\|` over a batch of pairs. The probe that finds false claims.
* :func:`random_pairs_ratio`: the same ratio on random pairs at several scales.
* :func:`assert_lipschitz`: runs the probes and asserts each stays ``<= bound * (1 + tol)``;
  :func:`assert_singular_values_in`: exact singular values inside ``[lo, hi]``.

All ratios are computed in float64 from the outputs, so the only rounding is ``f``'s own.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "adversarial_lipschitz_ratio",
    "assert_lipschitz",
    "assert_singular_values_in",
    "exact_singular_values",
    "jacobian_at",
    "jacobian_power_iteration",
    "lipschitz_probes",
    "max_local_jacobian_norm",
    "operator_matrix",
    "random_pairs_ratio",
]

Fn = Callable[[Tensor], Tensor]


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm of a batch, in float64. (N, ...) -> (N,)"""
    return t.reshape(t.shape[0], -1).double().norm(dim=1)


def operator_matrix(f: Fn, input_shape: Sequence[int], *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> Tensor:
    """The matrix of an *affine* ``f`` from its impulse response, in float64.

    One batched call on ``[0, e_1, ..., e_d]`` (shape ``(d+1, *input_shape)``): column i is
    ``f(e_i) - f(0)``. One call means one operator, even for layers whose operator changes
    between calls (power iteration in training). Returns shape ``(out_numel, d)``.
    """
    d = _numel(input_shape)
    basis = torch.cat([torch.zeros(1, d, dtype=dtype, device=device),
                       torch.eye(d, dtype=dtype, device=device)])  # (d+1, d)
    out = f(basis.reshape(d + 1, *input_shape))  # (d+1, *out_shape)
    out = out.reshape(d + 1, -1).double()
    return (out[1:] - out[:1]).mT.detach()  # (out_numel, d)


def jacobian_at(f: Fn, x: Tensor) -> Tensor:
    """The Jacobian of ``f`` at one point ``x`` (shape ``input_shape``), float64, shape
    ``(out_numel, in_numel)``.

    One forward, then one backward per output row (plain autograd rather than
    ``torch.func.jacrev``: onelip layers update persistent buffers in train mode, which
    ``torch.func`` transforms refuse to mutate).
    """
    xg = x.detach()[None].clone().requires_grad_(True)
    with torch.enable_grad():
        out = f(xg).reshape(-1)
        rows = [torch.autograd.grad(out[i], xg, retain_graph=i + 1 < out.numel())[0]
                for i in range(out.numel())]
    return torch.stack([r.reshape(-1) for r in rows]).double()
def exact_singular_values(f: Fn, input_shape: Sequence[int], *, at: Tensor | None = None,
                          dtype: torch.dtype = torch.float32) -> Tensor:
    """All singular values (descending, float64) of the operator of ``f``.

    ``at=None``: ``f`` must be affine; its matrix comes from :func:`operator_matrix`.
    Otherwise the Jacobian at the point ``at`` (shape ``input_shape``) via
    :func:`jacobian_at`: the local linear piece of a piecewise-linear network.
    """
    mat = operator_matrix(f, input_shape, dtype=dtype) if at is None else jacobian_at(f, at)
    return torch.linalg.svdvals(mat)


def max_local_jacobian_norm(f: Fn, input_shape: Sequence[int], *, n_points: int = 8,
                            scale: float = 1.0, dtype: torch.dtype = torch.float32,
                            seed: int = 0) -> float:
    """Max over random points ``x ~ scale·N(0, I)`` of the exact :math:`\\|J_f(x)\\|_2`."""
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    for _ in range(n_points):
        x = (scale * torch.randn(tuple(input_shape), generator=gen)).to(dtype)
        best = max(best, float(torch.linalg.matrix_norm(jacobian_at(f, x), ord=2)))
    return best


def jacobian_power_iteration(f: Fn, x: Tensor, *, iters: int = 50, seed: int = 0) -> Tensor:
    """Power iteration on :math:`J^\\top J` at each point of the batch ``x`` (N, *input_shape).

    No dense Jacobian: :math:`Jv` by double backward and :math:`J^\\top (Jv)` by a backward,
    from *one* forward per iteration (so a layer whose operator changes between calls is
    probed on one operator at a time). Returns (N,) float64 estimates of
    :math:`\\|J_f(x_n)\\|_2`, each a lower bound that converges to it. ``f`` must act on each
    sample independently.
    """
    gen = torch.Generator().manual_seed(seed)
    x = x.detach()
    view = (-1,) + (1,) * (x.dim() - 1)
    v = torch.randn(x.shape, generator=gen).to(x)
    v = v / v.reshape(x.shape[0], -1).norm(dim=1).view(view)
    best = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(iters):
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = f(xg)
            u = torch.zeros_like(out, requires_grad=True)
            (jtu,) = torch.autograd.grad(out, xg, u, create_graph=True)  # Jᵀu, linear in u
            (jv,) = torch.autograd.grad(jtu, u, v)  # J v
            (jtjv,) = torch.autograd.grad(out, xg, jv)  # JᵀJ v
        best = torch.maximum(best, _flat_norm(jv))
        v = jtjv / jtjv.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-30).view(view)
    return best


def adversarial_lipschitz_ratio(f: Fn, input_shape: Sequence[int], *, steps: int = 150,
                                n_pairs: int = 32, lr: float = 0.05, scale: float = 1.0,
                                dtype: torch.dtype = torch.float32, seed: int = 0) -> float:
    """Largest :math:`\\|f(x)-f(y)\\|/\\|x-y\\|` found by gradient ascent over pairs.

    ``n_pairs`` pairs start at ``scale·N(0, I)`` (half of them as close pairs
    ``y = x + 0.01·scale·N(0, I)`` to probe local slopes); Adam maximises the sum of the
    ratios. Returns the max ratio seen at any step (float64 arithmetic on the outputs). An
    empirical *lower* bound of the Lipschitz constant: above a claimed bound means the claim is
    false.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (n_pairs, *input_shape)
    x = (scale * torch.randn(shape, generator=gen)).to(dtype)
    y = (scale * torch.randn(shape, generator=gen)).to(dtype)
    half = n_pairs // 2
    y[:half] = x[:half] + 0.01 * scale * torch.randn((half, *input_shape), generator=gen).to(dtype)
    x.requires_grad_(True)
    y.requires_grad_(True)
    opt = torch.optim.Adam([x, y], lr=lr * scale)
    best = 0.0
    for _ in range(steps + 1):
        fx, fy = f(x), f(y)
        num = (fx - fy).reshape(n_pairs, -1).norm(dim=1)
        den = (x - y).reshape(n_pairs, -1).norm(dim=1).clamp_min(1e-12)
        ratio = num / den
        with torch.no_grad():
            exact = (_flat_norm(fx.detach().double() - fy.detach().double())
                     / _flat_norm(x.detach().double() - y.detach().double()).clamp_min(1e-300))
            best = max(best, float(exact.max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best


@torch.no_grad()
def random_pairs_ratio(f: Fn, input_shape: Sequence[int], *, n_pairs: int = 256,
                       scales: Sequence[float] = (1e-2, 1.0, 10.0),
                       dtype: torch.dtype = torch.float32, seed: int = 0) -> float:
    """Largest :math:`\\|f(x)-f(y)\\|/\\|x-y\\|` over random pairs ``x ~ N(0, I)``,
    ``y = x + s·N(0, I)`` for each scale s."""
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    for s in scales:
        x = torch.randn((n_pairs, *input_shape), generator=gen).to(dtype)
        y = x + s * torch.randn((n_pairs, *input_shape), generator=gen).to(dtype)
        ratio = (_flat_norm(f(x).double() - f(y).double())
                 / _flat_norm(x.double() - y.double()))
        best = max(best, float(ratio.max()))
    return best


def lipschitz_probes(f: Fn, input_shape: Sequence[int], *, affine: bool = False,
                     steps: int = 150, dtype: torch.dtype = torch.float32,
                     jacobian: bool = True, seed: int = 0) -> dict[str, float]:
    """Run every probe; returns ``{probe name: estimate}`` (each a lower bound of L).

    ``affine=True`` adds the exact operator norm from the impulse response; ``jacobian``
    adds the exact local Jacobian norms at random points (turn off for big inputs).
    """
    probes: dict[str, float] = {}
    if affine:
        probes["operator"] = float(exact_singular_values(f, input_shape, dtype=dtype)[0])
    if jacobian:
        probes["jacobian"] = max_local_jacobian_norm(f, input_shape, n_points=4, dtype=dtype,
                                                     seed=seed)
    x = torch.randn((4, *input_shape), generator=torch.Generator().manual_seed(seed)).to(dtype)
    probes["power"] = float(jacobian_power_iteration(f, x, iters=30, seed=seed).max())
    probes["adversarial"] = adversarial_lipschitz_ratio(f, input_shape, steps=steps,
                                                        dtype=dtype, seed=seed)
    probes["random"] = random_pairs_ratio(f, input_shape, dtype=dtype, seed=seed)
    return probes


def assert_lipschitz(f: Fn, input_shape: Sequence[int], bound: float = 1.0,
                     tol: float = 1e-5, **kwargs) -> dict[str, float]:
    """Assert that no probe of :func:`lipschitz_probes` exceeds ``bound * (1 + tol)``.

    ``kwargs`` go to :func:`lipschitz_probes`. Returns the probes (for tightness checks).
    """
    probes = lipschitz_probes(f, input_shape, **kwargs)
    limit = bound * (1 + tol)
    broken = {k: v for k, v in probes.items() if not v <= limit}
    assert not broken, (
        f"Lipschitz claim broken: probes {broken} exceed bound {bound} (limit {limit:.8g}, "
        f"tol {tol}); all probes: {probes}"
    )
    return probes


def assert_singular_values_in(f: Fn, input_shape: Sequence[int], lo: float, hi: float, *,
                              at: Tensor | None = None,
                              dtype: torch.dtype = torch.float32) -> Tensor:
    """Assert that every singular value of the operator of ``f`` lies in ``[lo, hi]``.

    ``lo = 0`` checks only the spectral norm; ``lo`` close to 1 checks orthogonality (only the
    ``min(out, in)`` nonzero singular values are compared). Returns the singular values.
    """
    s = exact_singular_values(f, input_shape, at=at, dtype=dtype)
    smax, smin = float(s[0]), float(s[-1])
    assert smax <= hi, f"sigma_max = {smax:.10g} > {hi:.10g}"
    assert smin >= lo, f"sigma_min = {smin:.10g} < {lo:.10g}"
    return s
