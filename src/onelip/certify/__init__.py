# SPDX-License-Identifier: MIT
r"""Certificates, certified accuracy, Lipschitz bounds and an attack that checks them.

If f is L-Lipschitz (L2):

* binary: :math:`\operatorname{sign} f(x)` cannot change under :math:`\|\delta\| < |f(x)|/L`;
* multiclass: with margin :math:`M(x) = f_y(x) - \max_{j\ne y} f_j(x)`, the top class cannot
  change under :math:`\|\delta\| < M(x)/(\sqrt2 L)`;
* last layer known (:math:`f = W h + b`, h L-Lipschitz): radius
  :math:`\min_{j\ne y}(f_y - f_j)/(L\,\|w_y - w_j\|)`, never smaller than the above when
  :math:`\|W\|_2 \le 1` (since :math:`\|w_y - w_j\| \le \sqrt2\,\|W\|_2`).

**Inputs.** Points x (N, *input_shape), finite; labels y, N of them, shape (N,) or (N, 1):
class indices in [0, K) for (N, K) outputs (integer-valued floats accepted), {0, 1} or
{−1, +1} for one output, as for the losses. A label tensor of another length is an error,
never broadcast; fractional, out-of-range and one-hot labels are errors, never truncated.
ε: one number or a sequence of them, each finite and >= 0.

**Precision.** A certificate is about the function the model computes as
:func:`lipschitz_bound` bounds it: the eval-mode weights applied in the model's own dtype
(float32, or float64), each layer's bound allowing for the rounding of its weights. Under an
ambient ``torch.autocast`` (bf16 or fp16) the same model computes another function: its
matmuls and convolutions, weights included, rounded to 8 or 11 significant bits. That function
has no certified bound (a weight of spectral norm 1 can round to one of norm
:math:`1 + 2^{-8}`) and its margins are off by some :math:`10^{-2}`, so upcasting its outputs
afterwards would certify nothing. The certificates (:func:`certified_accuracy`,
:func:`certified_radius`, :func:`last_layer_radius`, :func:`lipschitz_bound`) and the attack
that checks them (:func:`attack_l2`) therefore switch autocast off and compute in float32 or
better, whatever the ambient autocast: they certify the float32 model, not an autocast
(mixed-precision) deployment of it. A model whose weights are bf16 or fp16 is refused by
:func:`certified_accuracy` (certify ``model.float()``); lower-precision logits given to the
radius functions are upcast (exactly) before any arithmetic.

**All at once.** :func:`evaluate` gives what ``onelip certify`` prints and saves: the clean,
certified and last-layer certified accuracy on the same points, and optionally the attack and
the certified accuracy of the points it attacked (a :class:`CertifyReport`).

Modules: :mod:`.radius` (radii from logits), :mod:`.bounds` (upper and lower Lipschitz
bounds), :mod:`.accuracy` (certified accuracy), :mod:`.attack` (the empirical check),
:mod:`.report` (:func:`evaluate`, all of them on one set of points).
"""

from __future__ import annotations

from onelip.certify.accuracy import certified_accuracy
from onelip.certify.attack import AttackResult, attack_l2
from onelip.certify.bounds import estimate_lipschitz, lipschitz_bound, split_last_linear
from onelip.certify.radius import certified_radius, last_layer_radius
from onelip.certify.report import AttackReport, AttackSettings, CertifyReport, evaluate

__all__ = [
    "AttackReport",
    "AttackResult",
    "AttackSettings",
    "CertifyReport",
    "attack_l2",
    "certified_accuracy",
    "certified_radius",
    "estimate_lipschitz",
    "evaluate",
    "last_layer_radius",
    "lipschitz_bound",
    "split_last_linear",
]
