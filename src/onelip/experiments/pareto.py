# SPDX-License-Identifier: MIT
r"""Pareto — the accuracy / certified-robustness front on CIFAR-10 (the paper's Fig. 3).

The paper (``pareto-front-experiment.py`` of the authors' repository) trains one VGG of
**489,322** parameters — 3×3 convolutions 3→32, 32→32 | 32→64, 64→64, 64→64 | 64→128,
128→128, 128→128, GroupSort2 after each, 2×2 L2-norm pooling after the first two blocks,
global L2-norm pooling, dense 128 + GroupSort2, dense 10, biases everywhere — under three
losses, sweeping each one's hyper-parameter: τ of τ-CE (0.05 … 3), the hinge margin m (2 …
100 pixels) and α of HKR (5 … 300, m = 20 pixels). Fig. 3 plots clean against certified
accuracy at ε = 36/255 for the 18 settings (:data:`PAPER`); small τ, large m and small α are
robust, the other ends accurate.

**Part 1: the paper's network in onelip, under the paper's losses.** ``convnet`` with the
``bethune-vgg`` preset in the paper's parameterisation, ``layer="rko"`` (network
``paper-rko``, the default): :class:`~onelip.nn.RKOConv2d`, the reshaped kernel made
orthonormal by Björck steps and divided by 3 (the provable patch-count bound; deel-lip's
measured correction is 0.34–0.36), the paper's 489,322 parameters. ``layer="ortho"``
(``paper-ortho``, 197,738 parameters) uses orthogonal BCOP convolutions instead, the second
row. ``layer="spectral"`` (``paper-spectral``, 489,322 parameters: dense kernels normalised by
their operator norm, :class:`~onelip.nn.SpectralConv2d`) is kept for the record but not run by
default: from its Dirac-orthogonal start its logits spread over ≈ 5 units on images in [0, 1]
(``paper-rko``: ≈ 0.005, the paper's ≈ 1 pixel unit), τ-CE starts saturated, and in the four
sub-runs that ran (τ = 0.05 … 1, 20 CPU-minutes) it collapsed to a constant classifier
(11.9–13.7 % clean, 0 certified, the loss at ln 10). Dense layers are ``OrthoLinear`` (the
paper's Björck-orthonormalised dense layers). The paper's inputs were **0–255 pixels**
(no standardisation); ours are in [0, 1], so the network computes f/255 of the paper's f
(every layer is positively homogeneous, up to the biases, which start at 0) and the losses are
converted exactly (:func:`paper_loss`): the margin m (pixels) becomes m/255, τ-CE's
CE(τ·f)/τ becomes ``TauCrossEntropyLoss(255·τ)`` (a constant factor of the loss, which Adam
ignores), the hinge is ``MulticlassHingeLoss(m/255, mode="one_vs_all")`` (deel-lip 1.2's
``MulticlassHinge`` — full margin on each side, the true class weighted K−1, the mean over the
K outputs — is (K−1)/K times it) and HKR, −KR + α·hinge in deel-lip, is
``MulticlassHKRLoss(α·(K−1)/K, m/255, mode="one_vs_all")`` exactly. The repository ships the
deel-lip 1.2.0 wheel, which has no ``TauCategoricalCrossentropy`` (first released in 1.4.0,
whose hinge takes m/2): the script ran on a development version; we take 1.2.0's hinge and
HKR and the CE(τ·f)/τ of every later release. The paper's optimiser: Adam, lr 10⁻³, cosine
decay to 1 %, batch 512, no warm-up, no clipping (:data:`PAPER_RECIPE`). Its augmentation
(flip, brightness, contrast, hue, saturation, resize to 32–40 then crop) is, in onelip's
pipeline, crop (zero padding 4) + flip: no colour jitter, no zoom. At initialisation
``paper-rko``'s logits are a few 10⁻³ on images in [0, 1], as the paper's network starts
small (its eight RKO correction factors alone multiply to ≈ 2.3·10⁻⁴).

**Part 2: onelip's network** — by default the one-hour headline's network and recipe
(``benchmarks/cifar10_hour.py``, recipe 12): ``lipconvnet`` ConvNet XS with ShiftConv2d
(``onelip_layer="shift"``), centred inputs ``Normalize(mean, 1)`` (bound 1), Logit
Annealing (``LogitAnnealingLoss``: T = 0.75, offset ξ = 2, γ = 5) with its EMMA radius ε
ramped over the first 30 % of the budget, Adam 10⁻³, one-cycle, batch 256, clipping at 1.
The sweep moves LA's offset ξ ∈ ``la_offsets`` (0 … 8 logit units: the margin the loss asks
for, hence the trade-off) at the headline's ε = 36/255. (Sweeping ε at ξ = 2 instead,
``onelip_loss="la-epsilon"``, hardly moves the network: at 20 CPU-minutes ε = 0 and 18/255
gave 43.9 / 36.2 and 43.5 / 36.1 % clean / cert@36 — EMMA's margin ε·√2·L is small beside
ξ.) ``onelip_loss="offset-ce"`` sweeps the offset ξ = 2√2·L·ε of Prach et al.'s offset
cross-entropy (temperature ``offset_temperature``, theirs 1/4). A saved
network's figures (``saved_points``: e.g. ``benchmarks/models/cifar10-hour.json``, or any
JSON with ``clean`` and ``certified``) join its points.

**Budget.** Every sub-run trains for the same ``point_budget`` of its own process's CPU time
(``threads`` torch threads; ``jobs`` sub-runs at once, each its own process), the schedule
running over the budget's progress (:func:`onelip.experiments.vision.train_budgeted`); every
table row states the CPU time and the epochs it bought. The paper does not state its epochs
(its repository has only a smoke value of 3).

**Measured on the validation split**: a fixed, stratified 10 % of the training images (5,000
of CIFAR-10's 50,000); the test split is never read. The paper's figures come from Keras's
validation pass on the *test* split. Certificates are whole-network, in pixel space.

**Verdicts**: (a) per loss, does the hyper-parameter move the network along the front in the
paper's order (Spearman's ρ over the values, robust end first: clean accuracy up, certified
down, both |ρ| ≥ 0.5); (b) domination per clean-accuracy band: every paper point with clean
accuracy ≤ 80 % needs an onelip point with at least its clean *and* its certified accuracy
(the gap where not; the points above 80 % are named, beyond our budget); (c) at 70 % clean,
the certified accuracy interpolated on onelip's front against the target 55 % (the paper:
44 %); and the paper's network in onelip against the paper's point at each setting (within 5
points, or by how much).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

import torch

from onelip import losses
from onelip._errors import Argument, ArgumentError
from onelip.experiments import common, vision
from onelip.experiments.common import SubRuns, Verdict, table

__all__ = ["BANDS", "CLAIM", "NETWORKS", "PAPER", "PAPER_FRONT", "PAPER_POINTS",
           "PAPER_RECIPE", "ParetoConfig", "certified_at", "certified_at_clean",
           "domination", "domination_gap", "front", "paper_loss", "plot", "read_point", "run",
           "tables", "verdicts"]

CLAIM = "pareto"

PAPER = MappingProxyType({
    "tau": MappingProxyType({0.05: (0.794, 0.256), 0.1: (0.831, 0.071), 0.5: (0.865, 0.0),
                             1.0: (0.865, 0.0), 2.0: (0.865, 0.0), 3.0: (0.865, 0.0)}),
    "margin": MappingProxyType({2.0: (0.86, 0.0), 10.0: (0.834, 0.011), 20.0: (0.802, 0.144),
                                36.0: (0.768, 0.292), 50.0: (0.749, 0.362),
                                100.0: (0.698, 0.437)}),
    "alpha": MappingProxyType({5.0: (0.575, 0.437), 10.0: (0.669, 0.420),
                               30.0: (0.776, 0.304), 50.0: (0.792, 0.244),
                               100.0: (0.799, 0.211), 300.0: (0.804, 0.167)}),
})
"""The 18 points of the paper's Fig. 3, (clean accuracy, certified accuracy at 36/255) by loss
and setting in the paper's units (τ; m in pixels; α at m = 20 pixels), read off the figure of
the authors' repository (±0.01; τ ≥ 0.5 lie at 0.86–0.87 clean, 0 certified)."""
PAPER_POINTS = tuple(p for sweep in PAPER.values() for p in sweep.values())
"""The 18 points of :data:`PAPER`, without their settings."""

SWEEPS = ("tau", "margin", "alpha")
"""The paper's losses: τ-CE, hinge, HKR."""
OFFSET = "offset"
"""onelip's loss swept over ε: the offset cross-entropy (ξ = 2√2·L·ε) or LA's EMMA radius."""
XI = "xi"
"""onelip's loss swept over LA's offset ξ (logit units) at a fixed ε."""
ONELIP_SWEEPS = (XI, OFFSET)
NETWORKS = ("paper-rko", "paper-spectral", "paper-ortho", "onelip")
_NET_LABEL = {"paper-rko": "the paper's VGG in onelip, RKOConv2d (the paper's RKO, its 489,322 "
                           "parameters)",
              "paper-spectral": "the paper's VGG in onelip, SpectralConv2d (its 489,322 "
                                "parameters)",
              "paper-ortho": "the paper's VGG in onelip, OrthoConv2d",
              "onelip": "onelip's network"}
_SHORT = {"paper-rko": "paper VGG, RKO", "paper-spectral": "paper VGG, spectral",
          "paper-ortho": "paper VGG, ortho",
          "onelip": "onelip"}
_LOSS = {"tau": "τ-CE", "margin": "hinge", "alpha": "HKR (m = 20)", OFFSET: "margin loss",
         XI: "LA"}
_SYMBOL = {"tau": "τ", "margin": "m", "alpha": "α", OFFSET: "ε", XI: "ξ"}
_ROBUST_END = {"tau": "small", "margin": "large", "alpha": "small", OFFSET: "large",
               XI: "large"}
"""Which end of each hyper-parameter is the robust one (the paper's claim; for the offset,
the margin it asks for)."""
INPUT_SCALE = 255.0
"""The paper's inputs were 0–255 pixels, onelip's are in [0, 1]: its f is 255 × ours."""
PAPER_RECIPE = vision.Recipe(optimizer="adam", lr=1e-3, schedule="cosine", lr_floor=0.01,
                             batch_size=512, augment=("crop", "flip"))
"""The paper's optimiser (Adam 10⁻³, cosine decay to 1 %, batch 512) with onelip's nearest
augmentation (crop + flip; the paper: flip, colour jitter, resize-crop)."""
TARGET_AT_70 = 0.55
"""The issue's target: certified accuracy at 36/255 of onelip's network at 70 % clean."""
WITHIN = 0.05
"""The paper's network in onelip should land within this of the paper's point, per setting."""
DOMINATE_UP_TO = 0.80
"""Domination is asked of the paper's points up to this clean accuracy."""
BANDS = ((0.0, 0.65), (0.65, 0.70), (0.70, 0.75), (0.75, 0.80))
"""The clean-accuracy bands (lo, hi] of the domination verdict."""
ORDER_RHO = 0.5
"""Verdict (a): both rank correlations must reach this in the paper's direction."""


# ==== the front arithmetic ==================================================================


def front(points) -> list[tuple[float, float]]:
    """The non-dominated (clean, certified) points, by increasing clean accuracy: a point is
    dominated when another has at least its clean and at least its certified accuracy (and is
    not the same point)."""
    pts = sorted({(float(c), float(r)) for c, r in points}, key=lambda p: (p[0], p[1]))
    keep = [p for p in pts if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in pts)]
    return sorted(keep)


PAPER_FRONT = tuple(front(PAPER_POINTS))
"""The paper's Pareto front (the non-dominated points of :data:`PAPER_POINTS`)."""


def _cover(point, ours) -> tuple[float, tuple[float, float] | None]:
    """(gap, our point): the smallest, over our points (c', r'), of max(c − c', r − r', 0)
    for their point (c, r), and the point that attains it (None when we have none)."""
    c, r = point
    best = (1.0, None)
    for c2, r2 in ours:
        g = max(c - c2, r - r2, 0.0)
        if best[1] is None or g < best[0]:
            best = (g, (c2, r2))
    return best


def domination_gap(ours, theirs) -> float:
    """How far ``ours`` is from dominating ``theirs``: the largest, over their points (c, r),
    of the smallest, over our points (c', r'), of max(c − c', r − r', 0). Zero: every one of
    their points has one of ours with at least its clean and its certified accuracy.

    >>> domination_gap([(0.8, 0.5)], [(0.7, 0.44), (0.8, 0.21)])
    0.0
    >>> round(domination_gap([(0.7, 0.40)], [(0.7, 0.44)]), 3)
    0.04
    """
    ours = [(float(c), float(r)) for c, r in ours]
    if not ours:
        return 1.0
    return float(max(_cover(p, ours)[0] for p in theirs))


def domination(ours, theirs=None, *, up_to: float = DOMINATE_UP_TO) -> list[dict]:
    """Per paper point (all of :data:`PAPER` by default, as ``(sweep, value, clean, cert)``),
    sorted by clean accuracy: ``{"sweep", "value", "clean", "certified", "band", "gap",
    "by"}`` — ``band`` is its (lo, hi] of :data:`BANDS`, or None above ``up_to`` (beyond the
    budget), ``gap`` its :func:`domination_gap` to ``ours`` (0: dominated), ``by`` our
    point that comes closest (None: we have none)."""
    if theirs is None:
        theirs = [(s, v, c, r) for s, pts in PAPER.items() for v, (c, r) in pts.items()]
    ours = [(float(c), float(r)) for c, r in ours]
    out = []
    for sweep, value, c, r in sorted(theirs, key=lambda t: (t[2], -t[3])):
        gap, by = _cover((c, r), ours)
        band = None if c > up_to else next(b for b in BANDS if b[0] < c <= b[1] or
                                           (b[0] == 0 and c <= b[1]))
        out.append({"sweep": sweep, "value": value, "clean": c, "certified": r,
                    "band": band, "gap": gap, "by": by})
    return out


def certified_at_clean(points, clean: float) -> float | None:
    """The best certified accuracy among ``points`` with clean accuracy ≥ ``clean``."""
    ok = [r for c, r in points if c >= clean]
    return max(ok) if ok else None


def certified_at(points, clean: float) -> float | None:
    """The certified accuracy of the front of ``points`` at clean accuracy ``clean``: linear
    between the two front points around it; the first front point's when every point is more
    accurate; None when none reaches ``clean``.

    >>> certified_at([(0.6, 0.6), (0.8, 0.2)], 0.7)
    0.4
    """
    f = front(points)
    if not f or f[-1][0] < clean:
        return None
    if f[0][0] >= clean:
        return f[0][1]
    for (c1, r1), (c2, r2) in zip(f, f[1:]):
        if c1 <= clean <= c2:
            return round(r1 + (r2 - r1) * (clean - c1) / (c2 - c1), 10)
    return None  # unreachable: f[0] < clean <= f[-1]


def _ranks(v) -> list[float]:
    """Ranks of ``v`` from 0, ties sharing their average rank."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _rho(a, b) -> float:
    """Spearman's rank correlation with average ranks for ties (0 when one is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    n = len(ra)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return 0.0 if va == 0 or vb == 0 else cov / math.sqrt(va * vb)


def order(sweep: str, rows: list[tuple[float, float, float]]) -> dict:
    """Verdict (a) on ``rows`` (value, clean, certified) of one loss: the values from the
    robust end to the accurate end, Spearman's ρ of that order with clean accuracy (the
    paper: > 0) and with certified accuracy (< 0), and whether both reach
    :data:`ORDER_RHO`."""
    rows = sorted(rows, reverse=_ROBUST_END[sweep] == "large")
    pos = list(range(len(rows)))
    rc = _rho(pos, [r[1] for r in rows])
    rr = _rho(pos, [r[2] for r in rows])
    return {"rows": rows, "rho_clean": rc, "rho_certified": rr,
            "agree": len(rows) >= 2 and rc >= ORDER_RHO and rr <= -ORDER_RHO}


# ==== the configuration =====================================================================


@dataclass(frozen=True)
class ParetoConfig:
    """Fig. 3's loss sweeps: the paper's network in onelip (two parameterisations) under the
    paper's losses, onelip's network under its margin loss (LA), each sub-run within the
    same budget."""

    data: str | None = None
    """Data set for :func:`onelip.data.load` (``folder:DIR``: CIFAR-10 as image files);
    None: the full protocol needs ``--data``."""
    val_fraction: float = 0.1
    """Fraction of the training images held out for validation (5,000 of CIFAR-10's 50,000)."""
    n_train: int | None = None
    """Training images used (a fixed subset of the pool; None: all)."""
    n_val: int | None = None
    """Validation images measured (None: the whole validation part)."""
    taus: tuple[float, ...] = (0.05, 0.1, 0.5, 1.0, 2.0, 3.0)
    """τ of τ-CE in the paper's units (logits of 0–255 inputs): onelip's τ is 255·τ."""
    margins: tuple[float, ...] = (2.0, 10.0, 20.0, 36.0, 50.0, 100.0)
    """Hinge margins in pixels (onelip's margin m/255), ``mode="one_vs_all"``."""
    alphas: tuple[float, ...] = (5.0, 10.0, 30.0, 50.0, 100.0, 300.0)
    """α of the paper's HKR (−KR + α·hinge) at margin ``hkr_margin`` pixels."""
    hkr_margin: float = 20.0
    """HKR's margin, in pixels."""
    paper_net: tuple[tuple[str, object], ...] = (("preset", "bethune-vgg"),)
    """The paper's network: ``convnet`` fields (a preset name under "preset"); ``layer`` is
    set by the network's name (paper-spectral, paper-ortho)."""
    paper_lr: float = 1e-3
    """The paper's Adam learning rate (cosine to 1 %)."""
    paper_batch_size: int = 512
    offsets: tuple[float, ...] = (0.0, 18.0, 36.0, 72.0, 108.0, 144.0)
    """ε (1/255) swept by onelip's loss with ``onelip_loss="la-epsilon"``: the radius of LA's
    EMMA logits (:class:`~onelip.losses.LogitAnnealingLoss`, offset ξ = ``la_offset``
    fixed); with ``"offset-ce"`` the offset ξ = 2√2·L·ε, L the network's certified bound (1
    with centred inputs)."""
    la_offsets: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    """LA's offset ξ (logit units) swept with ``onelip_loss="la"``, at ε = ``la_epsilon``."""
    la_epsilon: float = 36.0
    """LA's EMMA radius ε (1/255) while ξ is swept (the headline's 36)."""
    onelip_loss: str = "la"
    """'la' (Logit Annealing, the one-hour headline's loss, sweeping its offset ξ: what sets
    the trade-off), 'la-epsilon' (LA sweeping its EMMA radius ε at ξ = ``la_offset``) or
    'offset-ce' (Prach et al., sweeping its offset through ε)."""
    offset_temperature: float = 0.75
    """Temperature T of onelip's loss (the headline's LA: 0.75; Prach et al.'s offset CE:
    1/4)."""
    la_offset: float = 2.0
    """LA's offset ξ (logit units), fixed over the sweep."""
    la_gamma: float = 5.0
    """LA's focal exponent γ."""
    onelip_epsilon_ramp: float = 0.3
    """The ε ramp of onelip's loss, a fraction of the budget (0: none)."""
    onelip_net: tuple[tuple[str, object], ...] = (("preset", "xs"),)
    """onelip's network: ``lipconvnet`` fields (a preset name under "preset")."""
    onelip_layer: str = "shift"
    """The convolution family of onelip's network (:data:`onelip.nn.CONV_LAYERS`)."""
    onelip_inputs: str = "center"
    """'center' (Normalize(mean, 1), bound 1) or 'std' (Normalize(mean, std), 1/min σ)."""
    onelip_optimizer: str = "adam"
    """'adam', 'adamw', 'nesterov' or 'nadam'."""
    onelip_lr: float = 1e-3
    onelip_schedule: str = "onecycle"
    """'onecycle' or 'cosine' (to 1 %), over the budget's progress."""
    onelip_batch_size: int = 256
    onelip_grad_clip: float = 1.0
    onelip_weight_decay: float = 0.0
    augment: tuple[str, ...] = ("crop", "flip")
    """Augmentation of every sub-run (images of at least 16×16)."""
    networks: tuple[str, ...] = ("paper-rko", "onelip", "paper-ortho")
    """Which of paper-rko, paper-spectral, paper-ortho, onelip to run, in this order
    (paper-spectral collapses under the paper's recipe: see the module)."""
    saved_points: tuple[str, ...] = ()
    """JSON files of saved networks' figures to add as onelip points (:func:`read_point`)."""
    point_budget: float | None = 1200.0
    """CPU seconds (of its own process) each sub-run trains for; None: ``epochs``."""
    epochs: float = 3.0
    """Passes over the training images per sub-run when ``point_budget`` is None."""
    threads: int = 1
    """torch threads of each sub-run."""
    jobs: int = 1
    """Sub-runs at once (each in its own process when > 1)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"Expected val_fraction in (0, 1), but got {self.val_fraction}")
        bad = [n for n in self.networks if n not in NETWORKS]
        if bad or not self.networks or len(set(self.networks)) != len(self.networks):
            raise ValueError(f"Expected networks among {', '.join(NETWORKS)}, each once, but "
                             f"got {self.networks}")
        if min((*self.taus, *self.margins, *self.alphas, self.hkr_margin), default=1) <= 0:
            raise ValueError("Expected positive taus, margins, alphas and hkr_margin")
        if min(self.offsets, default=0) < 0 or self.offset_temperature <= 0:
            raise ValueError("Expected offsets >= 0 and a positive offset_temperature")
        if self.onelip_loss not in ("la", "la-epsilon", "offset-ce"):
            raise ValueError(f"Expected onelip_loss 'la', 'la-epsilon' or 'offset-ce', but got "
                             f"{self.onelip_loss!r}")
        if (self.la_offset < 0 or self.la_gamma < 0 or self.la_epsilon < 0
                or min(self.la_offsets, default=0) < 0):
            raise ValueError("Expected la_offset, la_offsets, la_epsilon and la_gamma >= 0")
        if self.onelip_inputs not in ("center", "std"):
            raise ValueError(f"Expected onelip_inputs 'center' or 'std', but got "
                             f"{self.onelip_inputs!r}")
        if self.point_budget is not None and not self.point_budget > 0:
            raise ValueError(f"Expected a positive point_budget (CPU seconds) or None, but "
                             f"got {self.point_budget}")
        if not self.epochs > 0 or self.threads < 1 or self.jobs < 1:
            raise ValueError(f"Expected epochs > 0, threads >= 1 and jobs >= 1, but got "
                             f"{self.epochs}, {self.threads}, {self.jobs}")
        for network in self.networks:
            self.recipe(network)  # validates the optimiser, schedule, batch, augmentation

    def sweeps(self, network: str) -> tuple[str, ...]:
        if network == "onelip":
            return (XI,) if self.onelip_loss == "la" else (OFFSET,)
        return SWEEPS

    def values(self, sweep: str) -> tuple[float, ...]:
        return {"tau": self.taus, "margin": self.margins, "alpha": self.alphas,
                OFFSET: self.offsets, XI: self.la_offsets}[sweep]

    def budget(self) -> vision.Budget:
        return (vision.Budget(cpu_seconds=float(self.point_budget))
                if self.point_budget is not None else vision.Budget(epochs=float(self.epochs)))

    def net_fields(self, network: str) -> tuple[str, dict]:
        """(model name, fields) of a network of :data:`NETWORKS`."""
        if network == "onelip":
            return "lipconvnet", {**_fields("lipconvnet", dict(self.onelip_net)),
                                  "layer": self.onelip_layer}
        layer = network.split("-", 1)[1]
        return "convnet", {**_fields("convnet", dict(self.paper_net)), "layer": layer}

    def recipe(self, network: str) -> vision.Recipe:
        if network == "onelip":
            return vision.Recipe(optimizer=self.onelip_optimizer, lr=self.onelip_lr,
                                 schedule=self.onelip_schedule, batch_size=self.onelip_batch_size,
                                 augment=self.augment, grad_clip=self.onelip_grad_clip,
                                 weight_decay=self.onelip_weight_decay,
                                 epsilon_ramp=self.onelip_epsilon_ramp)
        return replace(PAPER_RECIPE, lr=self.paper_lr, batch_size=self.paper_batch_size,
                       augment=self.augment)

    def key(self, network: str, sweep: str, value: float) -> dict:
        """The config of one sub-run (its cache key)."""
        model, fields = self.net_fields(network)
        loss = (self.onelip_loss_key() if sweep in ONELIP_SWEEPS else
                {"hinge": "one_vs_all", "input_scale": INPUT_SCALE,
                 **({"hkr_margin": self.hkr_margin} if sweep == "alpha" else {})})
        return {"claim": CLAIM, "schema": 2, "network": [model, fields],
                "inputs": self.onelip_inputs if network == "onelip" else "[0, 1]",
                "sweep": sweep, "value": value, "loss": loss,
                "recipe": common.config_dict(self.recipe(network)),
                "budget": asdict(self.budget()), "threads": self.threads, "data": self.data,
                "val_fraction": self.val_fraction, "n_train": self.n_train, "n_val": self.n_val,
                "seed": self.seed}

    def onelip_loss_key(self) -> dict:
        """onelip's loss, without the swept value (part of the sub-runs' cache key)."""
        if self.onelip_loss == "la":
            return {"name": "la", "temperature": self.offset_temperature,
                    "epsilon": self.la_epsilon, "gamma": self.la_gamma}
        if self.onelip_loss == "la-epsilon":
            return {"name": "la", "temperature": self.offset_temperature,
                    "offset": self.la_offset, "gamma": self.la_gamma}
        return {"temperature": self.offset_temperature}  # offset-ce (schema 2's key)

    def onelip_loss_at(self, value: float, lipschitz: float):
        """onelip's loss at the swept ``value`` (LA's ξ with ``"la"``, else ε in 1/255) for a
        network of certified bound L."""
        if self.onelip_loss == "la":
            return losses.LogitAnnealingLoss(self.la_epsilon / 255, offset=value,
                                             temperature=self.offset_temperature,
                                             gamma=self.la_gamma, lipschitz=lipschitz)
        epsilon_255 = value
        if self.onelip_loss == "la-epsilon":
            return losses.LogitAnnealingLoss(epsilon_255 / 255, offset=self.la_offset,
                                             temperature=self.offset_temperature,
                                             gamma=self.la_gamma, lipschitz=lipschitz)
        return losses.OffsetCrossEntropyLoss(2 * math.sqrt(2) * lipschitz * epsilon_255 / 255,
                                             temperature=self.offset_temperature)

    def expected_seconds(self) -> float:
        """A sub-run's expected wall time when its budget is CPU time (training, then
        certification and the start of its process), else 0."""
        return 0.0 if self.point_budget is None else \
            1.05 * self.point_budget / self.threads + 60.0

    @classmethod
    def quick(cls) -> "ParetoConfig":
        """Smoke settings: two values a loss, 4,000 training images, 3 epochs, narrow
        networks; on the scikit-learn digits unless ``--data`` is given."""
        return cls(data="digits", val_fraction=0.2, n_train=4000, n_val=1000,
                   taus=(0.1, 3.0), margins=(10.0, 50.0), alphas=(10.0, 100.0),
                   offsets=(0.0, 72.0), la_offsets=(0.0, 4.0), point_budget=None, epochs=3.0,
                   paper_batch_size=128,
                   paper_lr=3e-3, onelip_batch_size=128, onelip_lr=3e-3,
                   paper_net=(("preset", "bethune-vgg"), ("width", 16)),
                   onelip_net=(("width", 16), ("blocks", 3), ("depth", 2)))

    @classmethod
    def full(cls) -> "ParetoConfig":
        """The paper's 18 settings for both parameterisations of its network and 6 offsets
        for onelip's on ``--data folder:DIR``: 42 sub-runs of 20 minutes of CPU time on one
        thread, two at a time (about 7 hours of wall-clock on two idle cores)."""
        return cls(jobs=2)


def _fields(model: str, fields: dict) -> dict:
    """``fields`` with its "preset" expanded (explicit fields override the preset's)."""
    from onelip import models

    fields = dict(fields)
    preset = fields.pop("preset", None)
    return {**(dict(models.presets(model)[preset]) if preset else {}), **fields}


def paper_loss(sweep: str, value: float, *, num_classes: int, hkr_margin: float = 20.0):
    """The paper's loss at a setting in its units (inputs 0–255: τ, m in pixels, α at
    ``hkr_margin`` pixels) as the onelip loss it equals, up to a constant factor, on inputs in
    [0, 1] (the network's f is 1/255 of the paper's):

    * τ-CE, CE(τ·f)/τ → ``TauCrossEntropyLoss(255·τ)``;
    * hinge (deel-lip 1.2 ``MulticlassHinge(m)``, (K−1)/K × onelip's one-vs-all) →
      ``MulticlassHingeLoss(m/255, mode="one_vs_all")``;
    * HKR, −KR + α·hinge → ``MulticlassHKRLoss(α·(K−1)/K, m/255, mode="one_vs_all")``.
    """
    k = num_classes
    if sweep == "tau":
        return losses.TauCrossEntropyLoss(value * INPUT_SCALE)
    if sweep == "margin":
        return losses.MulticlassHingeLoss(value / INPUT_SCALE, mode="one_vs_all")
    if sweep == "alpha":
        return losses.MulticlassHKRLoss(value * (k - 1) / k, hkr_margin / INPUT_SCALE,
                                        mode="one_vs_all")
    raise ValueError(f"Unknown sweep {sweep!r}; expected one of {', '.join(SWEEPS)}")


def _loss_text(loss) -> str:
    if isinstance(loss, losses.TauCrossEntropyLoss):
        return f"TauCrossEntropyLoss({loss.tau:g})"
    if isinstance(loss, losses.MulticlassHKRLoss):
        return f"MulticlassHKRLoss({loss.alpha:g}, {loss.margin:.4g}, one_vs_all)"
    if isinstance(loss, losses.MulticlassHingeLoss):
        return f"MulticlassHingeLoss({loss.margin:.4g}, one_vs_all)"
    if isinstance(loss, losses.LogitAnnealingLoss):
        return (f"LogitAnnealingLoss(ε={loss.epsilon:.4g}, offset={loss.offset:g}, "
                f"T={loss.temperature:g}, γ={loss.gamma:g}, L={loss.lipschitz:.4g})")
    return f"OffsetCrossEntropyLoss(offset={loss.offset:.4g}, T={loss.temperature:g})"


def _data(cfg: ParetoConfig) -> vision.ImageData:
    if cfg.data is None:
        raise ArgumentError("pareto's full protocol trains on CIFAR-10: pass ",
                            Argument("data", "data='folder:DIR'"),
                            " (the training images as an image folder), or use ",
                            Argument("quick", "quick=True"))
    return vision.load(cfg.data, val_fraction=cfg.val_fraction, n_val=cfg.n_val, seed=cfg.seed)


def _point(cfg: ParetoConfig, network: str, sweep: str, value: float,
           pool: list | None = None) -> dict:
    """One sub-run: build, train within the budget, certify on the validation part. ``pool``
    keeps the decoded data between the sub-runs of one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        if pool is None:
            pool = []
        if not pool:
            pool.append(_data(cfg))
        data = vision.subset(pool[0], cfg.n_train, seed=cfg.seed)
        model, fields = cfg.net_fields(network)
        net = vision.build_network(model, fields, data, seed=cfg.seed,
                                   normalize=cfg.onelip_inputs if network == "onelip" else False)
        if sweep in ONELIP_SWEEPS:
            from onelip.certify import lipschitz_bound

            lip = float(lipschitz_bound(net))
            loss = cfg.onelip_loss_at(value, lip)
        else:
            lip = None
            loss = paper_loss(sweep, value, num_classes=data.num_classes,
                              hkr_margin=cfg.hkr_margin)
        dev = vision.device()
        r = vision.train_budgeted(net, data, loss, cfg.recipe(network), cfg.budget(),
                                  seed=cfg.seed, device=dev)
        if r["diverged"] is None:
            r.update(vision.certify(net, data))
    finally:
        torch.set_num_threads(threads)
    r.update({"params": sum(p.numel() for p in net.parameters()), "loss": _loss_text(loss),
              "lipschitz": lip, "budget": cfg.budget().text(), "threads": cfg.threads,
              "device": common.device_name(dev), "data_name": data.name})
    return common.rounded(r, 5)


def run(cfg: ParetoConfig, *, out: Path | None = None, progress: bool = True,
        deadline: float | None = None) -> dict:
    """Run the sweeps; returns the JSON results (figure: :func:`plot`). With ``deadline``
    (:func:`time.monotonic`), no sub-run starts that its budget would carry past it
    (:meth:`ParetoConfig.expected_seconds`); those left out are named in
    ``results["subruns"]["not_run"]``, and the tables and verdicts use the points at hand."""
    base = common.config_dict(cfg)
    if cfg.data is None:
        _data(cfg)
    saved = [read_point(p) for p in cfg.saved_points]
    items = [(n, s, v) for n in cfg.networks for s in cfg.sweeps(n) for v in cfg.values(s)]
    start_by = None if deadline is None else deadline - cfg.expected_seconds()
    keyed = [(f"{n} {_SYMBOL[s]}={v:g}", cfg.key(n, s, v), (cfg, n, s, v)) for n, s, v in items]
    with SubRuns(CLAIM, out, total=len(items), progress=progress, deadline=start_by,
                 partial=True) as runs:
        if cfg.jobs > 1:
            if start_by is None or start_by > time.monotonic():
                todo = [k for _, k, _ in keyed if out is None or not (
                    Path(out) / CLAIM / "runs" / f"{common.config_key(k)}.json").exists()]
                if todo:  # decode the images once (onelip's image cache) before the workers
                    _data(cfg)
            res = runs.map(keyed, _point, jobs=cfg.jobs)
        else:
            pool: list = []
            res = [runs(name, key, lambda a=args: _point(*a, pool=pool))
                   for name, key, args in keyed]
        if not saved:
            runs.require_some()
        stats = runs.stats()
    nets: dict = {}
    for (network, sweep, value), r in zip(items, res):
        if r is not None:  # None: left out by the time budget (stats' not_run)
            nets.setdefault(network, {}).setdefault(sweep, []).append({"value": value, **r})
    results = {"claim": CLAIM, "config": base, "networks": nets, "saved": saved,
               "subruns": stats}
    results["tables"] = tables(results)
    results["verdicts"] = verdicts(results)
    return results


# ==== a saved network as a point ============================================================


def read_point(path: str | Path) -> dict:
    """A saved network's figures as an onelip point: the JSON a benchmark writes beside its
    weights (``benchmarks/models/cifar10-hour.json``: ``validation.clean``,
    ``validation.certified``, ``recipe``, ``split``) or any JSON with ``clean`` and
    ``certified`` (``{"36": …}``, fractions in [0, 1]) at its top level. Returns ``{"name",
    "source", "val_acc", "certified", "budget", "epochs", "n_val", "split"}``; a file that
    cannot be read or lacks the figures is a one-line ValueError."""
    path = Path(path)
    hint = ("give the JSON a benchmark saves beside a network (e.g. "
            "benchmarks/models/cifar10-hour.json) or one with 'clean' and 'certified'")
    try:
        d = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"saved point {path}: cannot read it ({e.strerror}); {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"saved point {path}: not JSON ({e}); {hint}") from None
    v = d.get("validation", d) if isinstance(d, dict) else None
    cert = v.get("certified") if isinstance(v, dict) else None
    clean = v.get("clean", v.get("val_acc")) if isinstance(v, dict) else None
    ok = isinstance(clean, (int, float)) and isinstance(cert, dict) and all(
        isinstance(cert.get(str(e)), (int, float)) for e in (36,))
    if not ok or not 0 <= clean <= 1 or not all(
            0 <= float(x) <= 1 for x in cert.values() if isinstance(x, (int, float))):
        raise ValueError(f"saved point {path}: no validation figures (clean and certified "
                         f"['36'], fractions in [0, 1]); {hint}")
    recipe = d.get("recipe", {}) if isinstance(d.get("recipe"), dict) else {}
    if "budget_cpu_seconds" in recipe:
        budget = f"{recipe['budget_cpu_seconds'] / 60:g} min of CPU time"
    elif "budget_seconds" in recipe:
        budget = f"{recipe['budget_seconds'] / 60:g} min of wall-clock"
    else:
        budget = str(d.get("budget", "not stated"))
    if recipe.get("threads"):
        budget += f", {recipe['threads']} thread(s)"
    split = d.get("split", {})
    split_text = (f"its own split: {split.get('val_size', '?')} validation images, seed "
                  f"{split.get('split_seed', '?')} ({d.get('written_by', 'its writer')})"
                  if isinstance(split, dict) and split else "its own validation split")
    return {"name": str(d.get("name") or path.stem), "source": str(path),
            "val_acc": float(clean),
            "certified": {str(k): float(x) for k, x in cert.items()
                          if isinstance(x, (int, float))},
            "budget": budget, "epochs": v.get("epochs"), "n_val": v.get("val_size"),
            "split": split_text, "recipe": recipe.get("loss")}


# ==== tables and verdicts (from the stored results alone) ===================================


def _ok(r: dict) -> bool:
    return r.get("val_acc") is not None and r.get("certified") is not None


def _points(sweeps: dict) -> list[tuple[float, float]]:
    return [(r["val_acc"], r["certified"]["36"]) for rs in sweeps.values() for r in rs
            if _ok(r)]


def _onelip_points(results: dict) -> list[tuple[float, float]]:
    pts = _points(results["networks"].get("onelip", {}))
    return pts + [(p["val_acc"], p["certified"]["36"]) for p in results.get("saved", [])]


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _budget_cell(r: dict) -> str:
    return (f"{r.get('cpu_seconds', 0):,.0f} s CPU, {r.get('threads', '?')} thread(s): "
            f"{r.get('epochs', 0):.2f} epochs, {r.get('steps', 0):,} steps")


def _protocol(results: dict) -> str:
    cfg = results["config"]
    any_run = next((r for n in results["networks"].values() for rs in n.values() for r in rs),
                   {})
    data = cfg.get("data") or "?"
    if str(data).startswith("folder:"):
        data = "CIFAR-10 JPEG"
    budget = (f"{cfg['point_budget'] / 60:g} min of CPU time" if cfg.get("point_budget")
              else f"{cfg.get('epochs', '?')} epochs")
    n_val = any_run.get("n_val", "?")
    return (f"{data}, {any_run.get('n_train', '?'):,} training images; accuracies on the "
            f"{n_val:,}-image validation split (a fixed stratified "
            f"{100 * cfg['val_fraction']:g} % of the training images; the paper: the test "
            f"split); each sub-run {budget} on {cfg.get('threads', 1)} thread(s), "
            f"{any_run.get('device', '?')} (the paper: epochs not stated)")


def _value_text(sweep: str, value: float) -> str:
    return f"{_SYMBOL[sweep]} = {value:g}"


def _onelip_sweep(cfg: dict) -> tuple[str, tuple, str]:
    """(sweep, values, the loss in words) of onelip's part, from a stored config (one
    written before ``onelip_loss`` existed swept the offset cross-entropy)."""
    loss = cfg.get("onelip_loss", "offset-ce")
    t = cfg.get("offset_temperature")
    if loss == "la":
        return XI, tuple(cfg.get("la_offsets", ())), (
            f"Logit Annealing (ε = {cfg.get('la_epsilon'):g}/255, T = {t:g}, γ = "
            f"{cfg.get('la_gamma'):g}, ε ramp {cfg.get('onelip_epsilon_ramp', 0):g}), its "
            "offset ξ swept")
    if loss == "la-epsilon":
        return OFFSET, tuple(cfg.get("offsets", ())), (
            f"Logit Annealing (ξ = {cfg.get('la_offset'):g}, T = {t:g}, γ = "
            f"{cfg.get('la_gamma'):g}, ε ramp {cfg.get('onelip_epsilon_ramp', 0):g}), its "
            "EMMA radius ε swept")
    return OFFSET, tuple(cfg.get("offsets", ())), (
        f"the offset cross-entropy (T = {t:g}), its offset ξ = 2√2·L·ε swept")


def _setting_text(sweep: str, value: float) -> str:
    return f"ξ = {value:g}" if sweep == XI else f"ε = {value:g}/255"


def tables(results: dict) -> list[dict]:
    cfg = results["config"]
    nets = results["networks"]
    out = []
    titles = {"tau": "τ-CE: the paper's τ (logits of 0–255 inputs; onelip's τ = 255·τ)",
              "margin": "hinge, one-vs-all: the paper's m in pixels (onelip's m/255)",
              "alpha": f"HKR (−KR + α·hinge, m = {cfg.get('hkr_margin', 20):g} pixels; "
                       "onelip's α·(K−1)/K)"}
    paper_nets = [n for n in NETWORKS if n != "onelip" and n in cfg["networks"]]
    for sweep in SWEEPS:
        if not paper_nets:
            break
        rows = []
        for value in cfg[{"tau": "taus", "margin": "margins", "alpha": "alphas"}[sweep]]:
            paper = PAPER[sweep].get(float(value))
            for network in paper_nets:
                r = next((x for x in nets.get(network, {}).get(sweep, [])
                          if x["value"] == value), None)
                pcell = "—" if paper is None else f"{_pct(paper[0])} / {_pct(paper[1])}"
                if r is None:
                    rows.append([f"{value:g}", _SHORT[network], "not run", "", "", "", pcell,
                                 "", ""])
                    continue
                if not _ok(r):
                    rows.append([f"{value:g}", _SHORT[network], f"failed: {r.get('diverged')}",
                                 "", "", "", pcell, "", _budget_cell(r)])
                    continue
                short = "—" if paper is None else _pct(
                    max(paper[0] - r["val_acc"], paper[1] - r["certified"]["36"], 0.0))
                rows.append([f"{value:g}", _SHORT[network], _pct(r["val_acc"]),
                             *[_pct(r["certified"][str(e)]) for e in vision.EPS_255], pcell,
                             short, _budget_cell(r)])
        out.append(table(f"{titles[sweep]}: validation accuracy (%) beside the paper's Fig. 3 "
                         f"point ({_protocol(results)})",
                         [_SYMBOL[sweep], "network", "clean", "cert@36", "cert@72",
                          "cert@108", "paper: clean / cert@36", "shortfall (pt)",
                          "budget"], rows))
    if "onelip" in cfg["networks"] or results.get("saved"):
        rows = []
        osweep, ovalues, owords = _onelip_sweep(cfg)
        for value in (ovalues if "onelip" in cfg["networks"] else []):
            r = next((x for x in nets.get("onelip", {}).get(osweep, [])
                      if x["value"] == value), None)
            setting = _setting_text(osweep, value)
            if r is None:
                rows.append([setting, "", "not run", "", "", "", ""])
            elif not _ok(r):
                rows.append([setting, r.get("loss", ""),
                             f"failed: {r.get('diverged')}", "", "", "", _budget_cell(r)])
            else:
                rows.append([setting, r.get("loss", ""), _pct(r["val_acc"]),
                             _pct(r["certified"]["36"]), _pct(r["certified"]["72"]),
                             _pct(r["certified"]["108"]), _budget_cell(r)])
        for p in results.get("saved", []):
            c = p["certified"]
            rows.append([f"saved: {p['name']}", p.get("recipe") or "", _pct(p["val_acc"]),
                         _pct(c.get("36")), _pct(c.get("72")), _pct(c.get("108")),
                         f"{p['budget']}: {p['epochs'] or '?'} epochs ({p['split']})"])
        net = cfg.get("onelip_net")
        out.append(table(f"onelip's network (lipconvnet {net}, layer {cfg.get('onelip_layer')}, "
                         f"{cfg.get('onelip_inputs')} inputs) under {owords}: "
                         f"validation accuracy (%) ({_protocol(results)})",
                         ["setting", "loss", "clean", "cert@36", "cert@72", "cert@108",
                          "budget"], rows))
    ours = _onelip_points(results)
    if "onelip" in cfg["networks"] or results.get("saved"):
        rows = []
        for d in domination(ours):
            band = ("> 80 % (beyond our budget)" if d["band"] is None else
                    f"{100 * d['band'][0]:.0f}–{100 * d['band'][1]:.0f} %")
            by = "—" if d["by"] is None else f"({_pct(d['by'][0])}, {_pct(d['by'][1])})"
            rows.append([f"{_LOSS[d['sweep']]} {_value_text(d['sweep'], d['value'])}",
                         f"({_pct(d['clean'])}, {_pct(d['certified'])})", band, by,
                         "yes" if d["gap"] == 0 else "no", _pct(d["gap"])])
        out.append(table("Domination: each of the paper's 18 points (clean %, cert@36 %) "
                         "against onelip's closest point (its sub-runs and saved points)",
                         ["paper point", "paper (clean, cert)", "band", "onelip's closest",
                          "dominated", "gap (pt)"], rows))
    return out


def verdicts(results: dict) -> list[dict]:
    """The verdict rows, from the stored results alone."""
    nets = results["networks"]
    proto = _protocol(results)
    out = []
    # (a) the order along the front, per network and loss
    paper_order = {s: order(s, [(v, c, r) for v, (c, r) in PAPER[s].items()]) for s in SWEEPS}
    for network in NETWORKS:
        for sweep in (SWEEPS if network != "onelip" else ONELIP_SWEEPS):
            rs = [r for r in nets.get(network, {}).get(sweep, []) if _ok(r)]
            if len(rs) < 2:
                continue
            o = order(sweep, [(r["value"], r["val_acc"], r["certified"]["36"]) for r in rs])
            sym = _SYMBOL[sweep]
            seq = ", ".join(f"{v:g}: {_pct(c)}/{_pct(r)}" for v, c, r in o["rows"])
            if sweep in PAPER:
                p = paper_order[sweep]
                research = (f"{_ROBUST_END[sweep]} {sym} robust, the other end accurate (Fig. 3; "
                            f"the paper's points {sym} = " + ", ".join(
                                f"{v:g}: {_pct(c)}/{_pct(r)}" for v, c, r in p["rows"])
                            + f"; ρ(clean) {p['rho_clean']:+.2f}, ρ(cert) "
                            f"{p['rho_certified']:+.2f})")
            elif sweep == XI:
                research = ("a larger offset ξ asks for a larger margin: more certified, less "
                            "clean accuracy (Prach et al.; LA, Lai et al.)")
            else:
                research = ("a larger offset asks for a larger margin: more certified, less "
                            "clean accuracy (Prach et al.)")
            out.append(Verdict(
                f"Fig. 3 order, {_LOSS[sweep]}, {_NET_LABEL[network]}: {_ROBUST_END[sweep]} "
                f"{sym} robust",
                research,
                f"{sym} from the robust end, clean/cert@36 %: {seq}; Spearman ρ with clean "
                f"{o['rho_clean']:+.2f}, with certified {o['rho_certified']:+.2f} (both "
                f"|ρ| ≥ {ORDER_RHO:g} in the paper's direction to agree)",
                o["agree"]).as_dict())
    # the paper's network in onelip, setting by setting
    for network in ("paper-rko", "paper-spectral", "paper-ortho"):
        rs = [(s, r) for s in SWEEPS for r in nets.get(network, {}).get(s, [])
              if _ok(r) and float(r["value"]) in PAPER[s]]
        if not rs:
            continue
        short = [(max(PAPER[s][float(r["value"])][0] - r["val_acc"],
                      PAPER[s][float(r["value"])][1] - r["certified"]["36"], 0.0), s, r)
                 for s, r in rs]
        worst = max(short, key=lambda t: t[0])
        within = sum(g <= WITHIN for g, _, _ in short)
        epochs = [r["epochs"] for _, r in rs if r.get("epochs") is not None]
        ep = (f"{min(epochs):.1f}–{max(epochs):.1f} epochs" if epochs else "? epochs")
        out.append(Verdict(
            f"Fig. 3: {_NET_LABEL[network]} lands on the paper's points, setting by setting",
            f"the paper's 18 points (Fig. 3, test split, epochs not stated); target: within "
            f"{100 * WITHIN:.0f} points in clean and certified accuracy at each setting",
            f"{within} of {len(short)} settings within {100 * WITHIN:.0f} points; the "
            f"largest shortfall {_pct(worst[0])} points at {_LOSS[worst[1]]} "
            f"{_value_text(worst[1], worst[2]['value'])} (ours {_pct(worst[2]['val_acc'])} / "
            f"{_pct(worst[2]['certified']['36'])}, the paper's "
            f"{_pct(PAPER[worst[1]][float(worst[2]['value'])][0])} / "
            f"{_pct(PAPER[worst[1]][float(worst[2]['value'])][1])}); our budget bought {ep}. "
            f"Protocol: {proto}",
            within == len(short)).as_dict())
    # (b) domination per band and (c) certified accuracy at 70 % clean, onelip's points
    ours = _onelip_points(results)
    if ours:
        dom = domination(ours)
        bands = []
        for lo, hi in BANDS:
            ds = [d for d in dom if d["band"] == (lo, hi)]
            if ds:
                bad = [d for d in ds if d["gap"] > 0]
                bands.append(f"{100 * lo:.0f}–{100 * hi:.0f} %: {len(ds) - len(bad)} of "
                             f"{len(ds)} dominated" + (
                                 f", gap {_pct(max(d['gap'] for d in bad))} pt" if bad else ""))
        beyond = [d for d in dom if d["band"] is None]
        beyond_text = "; ".join(f"{_LOSS[d['sweep']]} {_value_text(d['sweep'], d['value'])} "
                                f"({_pct(d['clean'])}, {_pct(d['certified'])}) gap "
                                f"{_pct(d['gap'])} pt" for d in beyond)
        inside = [d for d in dom if d["band"] is not None]
        out.append(Verdict(
            "Fig. 3: onelip's network dominates the paper's points up to 80 % clean",
            f"every paper point with clean accuracy ≤ {100 * DOMINATE_UP_TO:.0f} % "
            f"({len(inside)} of the 18) has an onelip point with at least its clean and at "
            "least its certified accuracy at 36/255",
            "; ".join(bands) + f". Beyond our budget (clean > {100 * DOMINATE_UP_TO:.0f} %): "
            f"{beyond_text}. Protocol: {proto}",
            all(d["gap"] == 0 for d in inside)).as_dict())
        at70 = certified_at(ours, 0.70)
        paper70 = certified_at(PAPER_POINTS, 0.70)
        out.append(Verdict(
            "Fig. 3: onelip's network at 70 % clean certifies ≥ 55 % at 36/255",
            f"the paper's front at 70 % clean: {_pct(paper70)} % certified (interpolated; "
            f"read as 44 %); target: ≥ {100 * TARGET_AT_70:.0f} %",
            ("our front does not reach 70 % clean (its most accurate point: "
             f"{_pct(max(c for c, _ in ours))} %)" if at70 is None else
             f"{_pct(at70)} % certified at 70 % clean (interpolated on our front "
             + ", ".join(f"({_pct(c)}, {_pct(r)})" for c, r in front(ours)) + ")"),
            at70 is not None and at70 >= TARGET_AT_70).as_dict())
    return out


# ==== figure ================================================================================


def plot(results: dict, outdir: Path) -> list[str]:
    """Validation clean vs certified accuracy at 36/255: the paper's 18 points and front, the
    paper's network in onelip (both parameterisations), onelip's network and saved points."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 5.0), layout="constrained")
    ax = fig.subplots()
    markers = {"tau": "o", "margin": "s", "alpha": "^", OFFSET: "D", XI: "D"}
    for sweep, pts in PAPER.items():
        ax.scatter(*zip(*pts.values()), marker=markers[sweep], facecolors="none",
                   edgecolors="0.35", label=f"paper, Fig. 3: {_LOSS[sweep]}")
    ax.plot(*zip(*PAPER_FRONT), color="0.35", ls="--", lw=0.8)
    colors = {"paper-rko": "#67000d", "paper-spectral": "#a50f15", "paper-ortho": "#fd8d3c",
              "onelip": "#08519c"}
    for network in NETWORKS:
        sweeps = results["networks"].get(network, {})
        for sweep, rs in sweeps.items():
            rs = [r for r in rs if _ok(r)]
            if rs:
                ax.scatter([r["val_acc"] for r in rs], [r["certified"]["36"] for r in rs],
                           marker=markers[sweep], color=colors[network], alpha=0.85,
                           label=f"{_SHORT[network]}: {_LOSS[sweep]}")
        f = front(_points(sweeps))
        if f:
            ax.plot(*zip(*f), color=colors[network], lw=1)
    for p in results.get("saved", []):
        ax.scatter([p["val_acc"]], [p["certified"]["36"]], marker="*", s=140,
                   color=colors["onelip"], label=f"onelip, saved: {p['name']}")
    ax.scatter([0.70], [TARGET_AT_70], marker="+", s=120, color="k",
               label="target: 55 % at 70 % clean")
    ax.axvline(DOMINATE_UP_TO, color="0.6", lw=0.6, ls=":")
    ax.set_xlabel("clean accuracy (ours: validation split; the paper: test split)")
    ax.set_ylabel("certified accuracy at ε = 36/255")
    ax.set_title("Accuracy / robustness front (the paper's Fig. 3)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    common.save_png(fig, Path(outdir) / "pareto.png")
    return ["pareto.png"]
