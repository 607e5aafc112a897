# SPDX-License-Identifier: MIT
"""An L2 attack that checks certificates empirically (:func:`attack_l2`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from onelip._validation import is_binary_output
from onelip.certify._inputs import (
    check_label_shape,
    check_points,
    check_positive_int,
    checked_labels,
    no_autocast_for,
)
from onelip.nn.utils import eval_mode

__all__ = ["AttackResult", "attack_l2"]


@dataclass
class AttackResult:
    """Result of :func:`attack_l2`. Shapes (N,)."""

    min_norm: Tensor  # smallest adversarial L2 norm found; inf where none found
    x_adv: Tensor  # the adversarial points (x where none found)

    def robust_accuracy(self, eps: float, correct: Tensor) -> float:
        """Fraction of points correctly classified that no found attack of norm ≤ eps flips."""
        return float((correct & (self.min_norm > eps)).float().mean())


def _checked_labels(logits: Tensor, y: Tensor) -> Tensor:
    """``y`` as :func:`_checked_margin` reads it: signs ±1 for one output (labels in {0, 1} or
    {−1, +1}, as for :func:`onelip.certify.certified_radius`), else class indices."""
    return checked_labels(logits, y)


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Positive when classified as the label y. (N,)"""
    return _checked_margin(logits, _checked_labels(logits, y))


def _checked_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """:func:`_margin` for labels already through :func:`_checked_labels`. (N,)"""
    if is_binary_output(logits):
        return labels.to(logits.dtype) * logits.reshape(-1)
    f_y = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return f_y - other


def attack_l2(model: nn.Module, x: Tensor, y: Tensor, *, max_eps: float = 3.0,
              steps: int = 50, restarts: int = 3, bisection: int = 10,
              deepfool_steps: int = 50, overshoot: float = 0.02,
              seed: int = 0) -> AttackResult:
    r"""A minimal-norm L2 attack: DeepFool on the margin, L2 PGD with random restarts, then a
    bisection over radii with PGD warm-started from the best adversarial direction.

    1. DeepFool (Moosavi-Dezfooli et al., 2016) on the margin
       :math:`m(x) = f_y(x) - \max_{j \ne y} f_j(x)`: :math:`x \leftarrow x - (1 + \text{overshoot})
       \, m(x) \, \nabla m / \|\nabla m\|^2` until :math:`m < 0` (``deepfool_steps`` at most).
       On a (nearly) linear network it lands on the closest boundary in a few steps.
    2. Where DeepFool found nothing within ``max_eps``: PGD at radius ``max_eps`` (``restarts``
       starts, the first at x, ``steps`` normalised-gradient steps with a decaying step size,
       best iterate kept).
    3. ``bisection`` halvings of [0, best norm]: PGD at the mid radius, its first start the best
       adversarial so far scaled to that radius, the others random.

    Returns the smallest adversarial norm found per point: an *upper* bound of the true
    minimal adversarial distance (``inf`` where nothing was found). Every returned ``x_adv`` is
    misclassified by the model in eval mode (each submodule's mode is restored after).
    Labels: class indices in [0, K) for (N, K) outputs; {0, 1} or {−1, +1} for one output
    (the rule of :func:`onelip.certify.certified_radius`: N of them, shape (N,) or (N, 1),
    never broadcast; others are a ValueError). Shapes: x (N, *input_shape) (N = 0 gives
    empty results), y (N,).

    Precision: any ambient ``torch.autocast`` is switched off, as for the certificates: the
    attack checks the function they certify (see :mod:`onelip.certify`).
    """
    x = check_points(x).detach()
    check_label_shape(y, x.shape[0])
    if not (max_eps > 0 and math.isfinite(max_eps)):
        raise ValueError(f"Expected a positive finite max_eps, but got max_eps={max_eps}")
    steps = check_positive_int("steps", steps)
    restarts = check_positive_int("restarts", restarts, minimum=0)
    bisection = check_positive_int("bisection", bisection, minimum=0)
    deepfool_steps = check_positive_int("deepfool_steps", deepfool_steps, minimum=0)
    if not (overshoot >= 0 and math.isfinite(overshoot)):
        raise ValueError(f"Expected a non-negative finite overshoot, but got "
                         f"overshoot={overshoot}")
    with no_autocast_for(x):
        return _attack(model, x, y, max_eps=max_eps, steps=steps, restarts=restarts,
                       bisection=bisection, deepfool_steps=deepfool_steps,
                       overshoot=overshoot, seed=seed)


def _attack(model: nn.Module, x: Tensor, y: Tensor, *, max_eps: float, steps: int,
            restarts: int, bisection: int, deepfool_steps: int, overshoot: float,
            seed: int) -> AttackResult:
    """:func:`attack_l2` on checked arguments, autocast off."""
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    shape = (-1,) + (1,) * (x.dim() - 1)
    inf = torch.tensor(float("inf"), device=x.device)

    def norms(d: Tensor) -> Tensor:
        return d.flatten(1).norm(dim=1)

    def margin_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            m = _checked_margin(model(z), y)
            (g,) = torch.autograd.grad(m.sum(), z)
        return m.detach(), g

    def pgd(eps: Tensor, warm: Tensor | None) -> tuple[Tensor, Tensor]:
        """Lowest-margin point found within radius eps (N,): (margin, point)."""
        best_m = torch.full((n,), float("inf"), device=x.device)
        best_x = x.clone()
        for r in range(restarts):
            if r == 0 and warm is not None:  # best adversarial direction, scaled to eps
                d = warm / norms(warm).clamp_min(1e-12).view(shape) * eps.view(shape)
            else:
                d = torch.randn(x.shape, generator=gen).to(x)
                d = d / norms(d).view(shape) * eps.view(shape) * (0.5 if r else 0.0)
            for k in range(steps + 1):
                m, g = margin_and_grad(x + d)
                better = m < best_m
                best_m = torch.where(better, m, best_m)
                best_x = torch.where(better.view(shape), x + d, best_x)
                if k == steps:
                    break
                step = eps * (2.5 / steps) * (1.0 - 0.9 * k / steps)
                g = g / norms(g).clamp_min(1e-12).view(shape)
                d = d - step.view(shape) * g
                d = d * torch.clamp(eps / norms(d).clamp_min(1e-12), max=1.0).view(shape)
        return best_m, best_x

    with eval_mode(model):
        with torch.no_grad():  # the labels, checked once (margins then read y as checked)
            y = _checked_labels(model(x), y)
        min_norm = torch.full((n,), float("inf"), device=x.device)
        x_adv = x.clone()

        def record(m: Tensor, xa: Tensor) -> None:
            nonlocal min_norm, x_adv
            d = norms(xa - x)
            improve = (m < 0) & (d < min_norm)
            min_norm = torch.where(improve, d, min_norm)
            x_adv = torch.where(improve.view(shape), xa, x_adv)

        # 1. DeepFool on the margin.
        z = x.clone()
        for _ in range(deepfool_steps):
            m, g = margin_and_grad(z)
            record(m, z)
            active = (m >= 0) & (norms(z - x) <= max_eps)
            if not bool(active.any()):
                break
            g2 = g.flatten(1).pow(2).sum(1).clamp_min(1e-24)
            z = torch.where(active.view(shape),
                            z - ((1 + overshoot) * (m + 1e-6) / g2).view(shape) * g, z)
        m = _checked_margin(model(z).detach(), y)
        record(m, z)
        # 2. PGD at max_eps where DeepFool failed.
        hi = torch.full((n,), float(max_eps), device=x.device)
        if bool((~torch.isfinite(min_norm)).any()):
            record(*pgd(hi, None))
        # 3. Bisection on the radius, warm-started.
        found = torch.isfinite(min_norm)
        lo = torch.zeros_like(hi)
        hi = torch.where(found, min_norm, hi)
        for _ in range(bisection):
            if not bool(found.any()):
                break
            mid = torch.where(found, (lo + hi) / 2, hi)
            m, xa = pgd(mid, torch.where(found.view(shape), x_adv - x, x_adv * 0))
            ok = found & (m < 0)
            record(torch.where(found, m, inf), xa)
            hi = torch.where(ok, mid, hi)
            lo = torch.where(found & ~ok, mid, lo)
    return AttackResult(min_norm=min_norm.detach(), x_adv=x_adv.detach())
