# SPDX-License-Identifier: MIT
r"""Certificates, certified accuracy, Lipschitz bounds and an attack that checks them.

If f is L-Lipschitz (L2):

* binary: :math:`\operatorname{sign} f(x)` cannot change under :math:`\|\delta\| < |f(x)|/L`;
* multiclass: with margin :math:`M(x) = f_y(x) - \max_{j\ne y} f_j(x)`, the top class cannot
  change under :math:`\|\delta\| < M(x)/(\sqrt2 L)`;
* last layer known (:math:`f = W h + b`, h L-Lipschitz): radius
  :math:`\min_{j\ne y}(f_y - f_j)/(L\,\|w_y - w_j\|)`, never smaller than the above when
  :math:`\|W\|_2 \le 1` (since :math:`\|w_y - w_j\| \le \sqrt2\,\|W\|_2`).

Modules: :mod:`.radius` (radii from logits), :mod:`.bounds` (upper and lower Lipschitz
bounds), :mod:`.accuracy` (certified accuracy), :mod:`.attack` (the empirical check).
"""

from __future__ import annotations

from onelip.certify.accuracy import certified_accuracy
from onelip.certify.attack import AttackResult, attack_l2
from onelip.certify.bounds import estimate_lipschitz, lipschitz_bound, split_last_linear
from onelip.certify.radius import certified_radius, last_layer_radius

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
