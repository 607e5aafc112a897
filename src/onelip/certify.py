# SPDX-License-Identifier: MIT
r"""Certificates, certified accuracy, Lipschitz bounds and an attack that checks them.

If f is L-Lipschitz (L2):

* binary: :math:`\operatorname{sign} f(x)` cannot change under :math:`\|\delta\| < |f(x)|/L`;
* multiclass: with margin :math:`M(x) = f_y(x) - \max_{j\ne y} f_j(x)`, the top class cannot
  change under :math:`\|\delta\| < M(x)/(\sqrt2 L)`;
* last layer known (:math:`f = W h + b`, h L-Lipschitz): radius
  :math:`\min_{j\ne y}(f_y - f_j)/(L\,\|w_y - w_j\|)`, never smaller than the above when
  :math:`\|W\|_2 \le 1` (since :math:`\|w_y - w_j\| \le \sqrt2\,\|W\|_2`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from onelip._checks import check_finite
from onelip.nn.sequential import module_lipschitz_bound

__all__ = [
    "AttackResult",
    "attack_l2",
    "certified_accuracy",
    "certified_radius",
    "estimate_lipschitz",
    "last_layer_radius",
    "lipschitz_bound",
    "split_last_linear",
]


def _check_lipschitz(lipschitz: float) -> None:
    if not (lipschitz > 0 and math.isfinite(lipschitz)):
        raise ValueError(f"Expected a positive finite lipschitz, but got lipschitz={lipschitz}")


def certified_radius(logits: Tensor, labels: Tensor | None = None, *,
                     lipschitz: float = 1.0) -> Tensor:
    r"""Certified L2 radius of each prediction of an L-Lipschitz network.

    * binary (logits (N,) or (N, 1)): :math:`|f|/L`, or with labels (±1 or {0,1})
      :math:`y f / L` (≤ 0 when misclassified);
    * multiclass (logits (N, K)): :math:`(f_{(1)} - f_{(2)})/(\sqrt2 L)` (top-1 minus top-2),
      or with labels :math:`(f_y - \max_{j\ne y} f_j)/(\sqrt2 L)` (≤ 0 when misclassified).

    Returns: shape (N,).
    """
    _check_lipschitz(lipschitz)
    if logits.dim() == 1 or (logits.dim() == 2 and logits.shape[1] == 1):
        f = logits.reshape(-1)
        if labels is None:
            return f.abs() / lipschitz
        y = labels.reshape(-1).to(f.dtype)
        y = torch.where(y == 0, -torch.ones_like(y), y)
        return y * f / lipschitz
    if logits.dim() != 2:
        raise ValueError(f"Expected logits of shape (N,) or (N, K), got {tuple(logits.shape)}")
    if labels is None:
        top2 = logits.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    else:
        y = labels.reshape(-1).long()
        f_y = logits.gather(1, y[:, None])[:, 0]
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        margin = f_y - other
    return margin / (math.sqrt(2) * lipschitz)


def last_layer_radius(logits: Tensor, weight: Tensor, labels: Tensor | None = None, *,
                      lipschitz: float = 1.0) -> Tensor:
    r"""Tighter exact radius when :math:`f = W h(x) + b` with h L-Lipschitz.

    :math:`r(x) = \min_{j \ne c} (f_c - f_j) / (L \|w_c - w_j\|)`, c the label (or the
    predicted class). Shapes: logits (N, K), weight (K, D) -> (N,).
    """
    _check_lipschitz(lipschitz)
    c = logits.argmax(1) if labels is None else labels.reshape(-1).long()
    w = weight.detach().to(logits.dtype)
    diff_norm = torch.cdist(w[None], w[None])[0]  # (K, K): ‖w_i − w_j‖
    f_c = logits.gather(1, c[:, None])  # (N, 1)
    num = f_c - logits  # (N, K)
    den = diff_norm[c]  # (N, K)
    ratio = num / den.clamp_min(1e-12)
    ratio = ratio.scatter(1, c[:, None], float("inf"))
    return ratio.amin(1) / lipschitz


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
    was = model.training
    model.eval()
    try:
        return module_lipschitz_bound(model)
    finally:
        model.train(was)


def _batches(x: Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield slice(i, i + batch_size)


@torch.no_grad()
def certified_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: Sequence[float] = (0.5,),
                       *, method: str = "margin", lipschitz: float | None = None,
                       batch_size: int = 1024) -> dict:
    """Clean accuracy and certified accuracy at each ε (fraction of points correctly classified
    with certified radius > ε), in eval mode.

    Args:
        method: ``"margin"`` (margin/(√2 L) or |f|/L) or ``"last_layer"``
            (:func:`last_layer_radius`, needs a model ending in a linear layer).
        lipschitz: the model's bound; default :func:`lipschitz_bound`.

    Returns:
        ``{"clean": float, "certified": {eps: float}, "radii": Tensor (N,)}``.
    """
    if any(e < 0 or not math.isfinite(e) for e in eps):
        raise ValueError(f"Expected non-negative finite eps, but got {list(eps)}")
    check_finite("x", x)
    was = model.training
    model.eval()
    try:
        if method == "margin":
            lip = lipschitz_bound(model) if lipschitz is None else lipschitz
            logits = torch.cat([model(x[s]) for s in _batches(x, batch_size)])
            radii = certified_radius(logits, y, lipschitz=lip)
        elif method == "last_layer":
            split = split_last_linear(model)
            if split is None:
                raise ValueError("method='last_layer' needs a Sequential ending in a linear layer")
            body, w, b = split
            lip = lipschitz_bound(body) if lipschitz is None else lipschitz
            feats = torch.cat([body(x[s]) for s in _batches(x, batch_size)])
            logits = feats @ w.mT + (b if b is not None else 0)
            if logits.shape[1] == 1:
                radii = certified_radius(logits, y, lipschitz=lip * float(w.norm()))
            else:
                radii = last_layer_radius(logits, w, y, lipschitz=lip)
        else:
            raise ValueError(f"Unknown method {method!r}; expected 'margin' or 'last_layer'")
    finally:
        model.train(was)
    correct = radii > 0
    return {
        "clean": float(correct.float().mean()),
        "certified": {float(e): float((radii > e).float().mean()) for e in eps},
        "radii": radii,
    }


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


@dataclass
class AttackResult:
    """Result of :func:`attack_l2`. Shapes (N,)."""

    min_norm: Tensor  # smallest adversarial L2 norm found; inf where none found
    x_adv: Tensor  # the adversarial points (x where none found)

    def robust_accuracy(self, eps: float, correct: Tensor) -> float:
        """Fraction of points correctly classified that no found attack of norm ≤ eps flips."""
        return float((correct & (self.min_norm > eps)).float().mean())


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Positive when classified as y. (N,)"""
    if logits.dim() == 1 or logits.shape[1] == 1:
        f = logits.reshape(-1)
        s = torch.where(y.reshape(-1) > 0, 1.0, -1.0).to(f)
        return s * f
    f_y = logits.gather(1, y[:, None].long())[:, 0]
    other = logits.scatter(1, y[:, None].long(), float("-inf")).amax(1)
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
    misclassified by the model in eval mode. Labels: class indices for (N, K) outputs;
    {0,1}/±1 for one output. Shapes: x (N, *input_shape), y (N,).
    """
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    x = x.detach()
    n = x.shape[0]
    shape = (-1,) + (1,) * (x.dim() - 1)
    inf = torch.tensor(float("inf"), device=x.device)

    def norms(d: Tensor) -> Tensor:
        return d.flatten(1).norm(dim=1)

    def margin_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            m = _margin(model(z), y)
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

    try:
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
        m = _margin(model(z).detach(), y)
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
    finally:
        model.train(was)
    return AttackResult(min_norm=min_norm.detach(), x_adv=x_adv.detach())
