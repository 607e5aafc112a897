# SPDX-License-Identifier: MIT
r"""One evaluation of a model's certificates on labelled points (:func:`evaluate`): what
``onelip certify`` prints and saves, as a :class:`CertifyReport`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from onelip._validation import is_binary_output
from onelip.certify._inputs import check_eps, check_points, check_positive_int, no_autocast_for
from onelip.certify.accuracy import certified_accuracy
from onelip.certify.attack import AttackResult, attack_l2
from onelip.certify.bounds import lipschitz_bound, split_last_linear
from onelip.nn.utils import eval_mode

__all__ = ["AttackReport", "AttackSettings", "CertifyReport", "evaluate"]

# An adversarial norm below (1 − _VIOLATION_SLACK) × the certified radius is counted as a
# violated certificate: the attack's points are float32, their norms exact to some 1e-7.
_VIOLATION_SLACK = 1e-4


@dataclass(frozen=True)
class AttackSettings:
    """How :func:`evaluate` attacks the first points (:func:`~onelip.certify.attack_l2`);
    the defaults are ``onelip certify --attack``'s."""

    points: int = 200
    """The first ``points`` points are attacked (all of them if there are fewer)."""
    steps: int = 30
    """PGD steps per restart and radius."""
    restarts: int = 2
    """PGD starts per radius, the first one warm."""
    bisection: int = 8
    """Halvings of the radius after the first adversarial point is found."""

    def __post_init__(self) -> None:
        check_positive_int("attack.points", self.points)
        check_positive_int("attack.steps", self.steps)
        check_positive_int("attack.restarts", self.restarts, minimum=0)
        check_positive_int("attack.bisection", self.bisection, minimum=0)


@dataclass(frozen=True)
class AttackReport:
    """The attack's figures on the ``points`` points it attacked, next to the certificates
    of the same points (so that the two compare)."""

    points: int
    """How many points were attacked (the first ones)."""
    clean_same_points: float
    """Clean accuracy on those points."""
    robust: dict[float, float]
    """ε → fraction of those points correctly classified that no adversarial point of norm
    ≤ ε found by the attack flips (an upper bound of the robust accuracy)."""
    certified_same_points: dict[float, float]
    """ε → certified accuracy on those points (a lower bound of the robust accuracy)."""
    median_adv_over_radius: float | None
    """Median over the correctly classified points the attack broke of (adversarial norm /
    certified radius): 1 when the certificates are tight; None if it broke none."""
    violations: int | None
    """Points whose adversarial norm is below their certified radius (by more than
    1e-4 of it): 0 unless a certificate is wrong; None if the attack broke none."""
    result: AttackResult
    """The attack itself: smallest adversarial norms (points,) and points."""


@dataclass(frozen=True)
class CertifyReport:
    """What :func:`evaluate` measured; :meth:`to_dict` gives it as ``onelip certify`` saves
    it. Accuracies are fractions in [0, 1]; each ε key is a float."""

    n: int
    """How many points were certified."""
    lipschitz_bound: float
    """L, the certified upper bound of the model's Lipschitz constant (:func:`lipschitz_bound`)."""
    binary: bool
    """True for one output (radius |f|/L), False for K ≥ 2 outputs (margin/(√2 L))."""
    clean: float
    """Clean accuracy."""
    certified: dict[float, float]
    """ε → certified accuracy: the fraction of points correctly classified with radius > ε."""
    radii: Tensor
    """(N,) the certified radius of each point (≤ 0 where misclassified)."""
    certified_last_layer: dict[float, float] | None = None
    """ε → certified accuracy by the last-layer radius; None unless the model is a
    ``Sequential`` ending in a linear layer."""
    last_layer_median_gain: float | None = None
    """Median over the correctly classified points of (last-layer radius / radius)."""
    attack: AttackReport | None = None
    """The attack's figures; None unless :func:`evaluate` was given ``attack``."""

    def to_dict(self) -> dict:
        """The report as JSON data, keys as ``onelip certify`` writes them (ε as strings,
        e.g. ``"0.5"``; no tensors)."""
        out: dict = {"n_test": self.n, "lipschitz_bound": self.lipschitz_bound,
                     "clean": self.clean, "certified": _by_str(self.certified)}
        if self.certified_last_layer is not None:
            out["certified_last_layer"] = _by_str(self.certified_last_layer)
            out["last_layer_median_gain"] = self.last_layer_median_gain
        if self.attack is not None:
            a = self.attack
            out["attack"] = {"points": a.points, "clean_same_points": a.clean_same_points,
                             "robust": _by_str(a.robust),
                             "certified_same_points": _by_str(a.certified_same_points)}
            if a.median_adv_over_radius is not None:
                out["attack"]["median_adv_over_radius"] = a.median_adv_over_radius
                out["attack"]["violations"] = a.violations
        return out


def _by_str(by_eps: dict[float, float]) -> dict[str, float]:
    return {str(e): v for e, v in by_eps.items()}


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, *,
             eps: float | Sequence[float] = (0.5, 1.0, 1.58),
             attack: AttackSettings | None = None, batch_size: int = 1024) -> CertifyReport:
    r"""Clean and certified accuracy of ``model`` on the points ``x`` (labels ``y``), by the
    margin and, where it applies, by the last layer, and optionally an attack that checks the
    certificates on the first points.

    With :math:`L` the certified bound of the model's Lipschitz constant
    (:func:`~onelip.certify.lipschitz_bound`), :math:`f(x) \in \mathbb R^K` its logits and
    :math:`y` the label, the certified radius of a point is

    .. math::
        r(x) = \frac{f_y(x) - \max_{j \ne y} f_j(x)}{\sqrt2\,L} \quad (K \ge 2),
        \qquad r(x) = \frac{y\,f(x)}{L} \quad (K = 1,\ y \in \{-1, +1\}),

    :math:`\le 0` exactly where x is misclassified. For each ε the certified accuracy is
    :math:`\frac1N \#\{n : r(x_n) > \varepsilon\}` and the clean accuracy
    :math:`\frac1N \#\{n : r(x_n) > 0\}`: no perturbation of norm :math:`\le \varepsilon` changes
    the prediction of a certified point. For a ``Sequential`` ending in a linear layer
    :math:`f = W h + b` (h of bound :math:`L_h`), also the last-layer radius
    :math:`\min_{j \ne y} (f_y - f_j)/(L_h \|w_y - w_j\|)`
    (:func:`~onelip.certify.last_layer_radius`), never smaller when :math:`\|W\|_2 \le 1`.

    With ``attack``, :func:`~onelip.certify.attack_l2` looks for the smallest adversarial
    point of each of the first ``attack.points`` points, up to a norm of
    :math:`2 \max \varepsilon + 0.5`; on those points it reports the empirical robust accuracy
    (an upper bound of the robust accuracy), the certified accuracy (a lower bound) and the
    number of certificates it broke (0 unless a certificate is wrong).

    Args:
        model: the network, in float32 or float64 (evaluated in eval mode, autocast off).
        x: the points, (N, \*input_shape), N ≥ 1, finite.
        y: the labels, (N,) or (N, 1): class indices in [0, K) for K ≥ 2 outputs, {0, 1} or
            {−1, +1} for one.
        eps: one radius or several, each finite and ≥ 0 (sorted, duplicates dropped).
            Default ``(0.5, 1.0, 1.58)``.
        attack: how to attack (:class:`AttackSettings`); default None: no attack.
        batch_size: points per forward. Default 1024.

    Returns:
        A :class:`CertifyReport`: ``radii`` (N,), accuracies as fractions keyed by ε.

    Example:
        >>> import torch
        >>> from onelip import nn as lnn
        >>> from onelip.certify import AttackSettings, evaluate
        >>> _ = torch.manual_seed(0)
        >>> model = lnn.Sequential(lnn.OrthoLinear(4, 8), lnn.MaxMin(), lnn.OrthoLinear(8, 3))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> rep = evaluate(model, x, y, eps=[0.01, 0.1], attack=AttackSettings(points=16))
        >>> rep.certified[0.1] <= rep.certified[0.01] <= rep.clean  # certified: fewer points
        True
        >>> rep.attack.violations in (None, 0)  # no attack beats a certificate
        True
    """
    eps_list = sorted(set(check_eps(eps)))
    x = check_points(x)
    if x.shape[0] == 0:
        raise ValueError(f"x holds no points (shape {tuple(x.shape)}): nothing to certify")
    batch_size = check_positive_int("batch_size", batch_size)
    if attack is not None and not isinstance(attack, AttackSettings):
        raise TypeError(f"Expected attack to be an AttackSettings or None, but got "
                        f"{type(attack).__name__}")
    bound = lipschitz_bound(model)
    res = certified_accuracy(model, x, y, eps_list, lipschitz=bound, batch_size=batch_size)
    radii = res["radii"]  # (N,)
    with eval_mode(model), no_autocast_for(x):  # radius |f|/L for one output, else margin
        binary = is_binary_output(model(x[:1]))
    last_layer = gain = None
    if split_last_linear(model) is not None:
        ll = certified_accuracy(model, x, y, eps_list, method="last_layer",
                                batch_size=batch_size)
        last_layer = ll["certified"]
        ok = radii > 0  # (N,) correctly classified
        gain = float((ll["radii"][ok] / radii[ok]).median()) if ok.any() else 1.0
    att = None
    if attack is not None:
        att = _attack(model, x, y, radii, eps_list, attack)
    return CertifyReport(n=int(x.shape[0]), lipschitz_bound=bound, binary=binary,
                         clean=res["clean"], certified=res["certified"], radii=radii,
                         certified_last_layer=last_layer, last_layer_median_gain=gain,
                         attack=att)


def _attack(model: nn.Module, x: Tensor, y: Tensor, radii: Tensor, eps: list[float],
            settings: AttackSettings) -> AttackReport:
    """The attack of :func:`evaluate` on the first points, next to their certificates."""
    n = min(settings.points, x.shape[0])
    result = attack_l2(model, x[:n], y[:n], max_eps=max(eps) * 2 + 0.5, steps=settings.steps,
                       restarts=settings.restarts, bisection=settings.bisection)
    r = radii[:n]  # (n,) the certificates of the attacked points
    correct = r > 0
    found = correct & torch.isfinite(result.min_norm)  # (n,) correct points the attack broke
    ratio = result.min_norm[found] / r[found]
    return AttackReport(
        points=n,
        clean_same_points=float(correct.float().mean()),
        robust={e: result.robust_accuracy(e, correct) for e in eps},
        certified_same_points={e: float((r > e).float().mean()) for e in eps},
        median_adv_over_radius=float(ratio.median()) if ratio.numel() else None,
        violations=int((ratio < 1 - _VIOLATION_SLACK).sum()) if ratio.numel() else None,
        result=result,
    )
