# SPDX-License-Identifier: MIT
r"""Pareto — the accuracy / certified-robustness front on CIFAR-10 (the paper's Fig. 3).

The paper (``pareto-front-experiment.py``) trains its ≈0.4M-parameter VGG — 3×3 convolutions
(32, 32) / (64, 64, 64) / (128, 128, 128), GroupSort2, L2-norm pooling between stages, global
L2-norm pooling, dense 128, dense 10 — sweeping the loss's hyper-parameter: τ of τ-CE
(0.05 … 3), the margin m of the hinge (2/255 … 100/255) and α of HKR (5 … 300), and plots
validation clean accuracy against certified accuracy at ε = 36/255. Its front: 44 % certified
at 70 % clean, 21 % at 80 %, 0 at 87 %. The front *is* the trade-off of claim 4: each loss
moves along it with its hyper-parameter (small τ, large m, small α: robust; the other way:
accurate).

We run the same sweeps with the paper's network built from onelip's layers (``convnet
--set preset=bethune-vgg``: OrthoConv2d, GroupSort2, L2NormPool2d, OrthoLinear), then with
onelip's best network of the real-images issue (``lipconvnet`` ConvNet XS: Normalize,
OrthoConv2d, MaxMin, pixel unshuffle), and put both fronts beside the paper's points.
Training: Adam, one-cycle, gradient clipping at 1, crop (padding 4) + flip (the paper: flips,
brightness, contrast, hue, saturation, resize-crop; Adam with cosine decay, batch 512).
Every accuracy is measured on a validation split of the training images (the test split is
never read); certificates are whole-network, in pixel space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onelip import losses
from onelip._errors import Argument, ArgumentError
from onelip.experiments import common, vision
from onelip.experiments.common import SubRuns, Verdict, table

__all__ = ["CLAIM", "PAPER_FRONT", "PAPER_POINTS", "ParetoConfig", "domination_gap", "front",
           "plot", "run", "verdicts"]

CLAIM = "pareto"

PAPER_POINTS = ((0.575, 0.44), (0.67, 0.42), (0.70, 0.44), (0.75, 0.365), (0.77, 0.29),
                (0.775, 0.305), (0.79, 0.255), (0.79, 0.245), (0.80, 0.21), (0.80, 0.145),
                (0.805, 0.165), (0.83, 0.07), (0.835, 0.015), (0.865, 0.0))
"""(validation clean accuracy, certified accuracy at 36/255) of the paper's Fig. 3 (Béthune et
al., NeurIPS 2022), read off the figure (±0.01–0.02): these constants are the record."""

SWEEPS = ("tau", "margin", "alpha")
_LABEL = {"tau": "τ-CE (τ)", "margin": "hinge (m·255)", "alpha": "HKR (α)"}
NETWORKS = ("paper", "onelip")
_NET_LABEL = {"paper": "the paper's VGG in onelip", "onelip": "onelip's best network"}
TARGET_AT_70 = 0.55
"""The issue's target: certified accuracy at 36/255 of onelip's best network at 70 % clean."""
WITHIN = 0.03
"""The paper's network in onelip should land within this of the paper's front."""


def front(points) -> list[tuple[float, float]]:
    """The non-dominated (clean, certified) points, by increasing clean accuracy: a point is
    dominated when another has at least its clean and at least its certified accuracy (and is
    not the same point)."""
    pts = sorted({(float(c), float(r)) for c, r in points}, key=lambda p: (p[0], p[1]))
    keep = [p for p in pts if not any(q != p and q[0] >= p[0] and q[1] >= p[1] for q in pts)]
    return sorted(keep)


PAPER_FRONT = tuple(front(PAPER_POINTS))
"""The paper's Pareto front (the non-dominated points of :data:`PAPER_POINTS`)."""


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
    return float(max(min(max(c - c2, r - r2, 0.0) for c2, r2 in ours) for c, r in theirs))


def certified_at_clean(points, clean: float) -> float | None:
    """The best certified accuracy among ``points`` with clean accuracy ≥ ``clean``."""
    ok = [r for c, r in points if c >= clean]
    return max(ok) if ok else None


@dataclass(frozen=True)
class ParetoConfig:
    """The loss sweeps of Fig. 3, for the paper's network and onelip's best network."""

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
    """τ of τ-CE (the paper's range)."""
    margins: tuple[float, ...] = (2.0, 10.0, 20.0, 36.0, 50.0, 100.0)
    """Hinge margins in 1/255 pixel units (the paper's range); the loss is
    ``MulticlassHingeLoss(m/255, mode="top2")``."""
    alphas: tuple[float, ...] = (5.0, 10.0, 30.0, 50.0, 100.0, 300.0)
    """α of HKR (the paper's range), with margin ``hkr_margin``/255."""
    hkr_margin: float = 36.0
    """HKR's margin, in 1/255 units."""
    paper_net: tuple[tuple[str, object], ...] = (("preset", "bethune-vgg"),)
    """The paper's network: ``convnet`` fields (a preset name under "preset")."""
    onelip_net: tuple[tuple[str, object], ...] = (("preset", "xs"),)
    """onelip's best network: ``lipconvnet`` fields (with a Normalize first layer)."""
    networks: tuple[str, ...] = NETWORKS
    """Which of 'paper', 'onelip' to run."""
    epochs: int = 60
    """Passes over the training images per sub-run."""
    batch_size: int = 256
    lr: float = 1e-3
    """Peak learning rate (Adam, one-cycle)."""
    augment: tuple[str, ...] = ("crop", "flip")
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"Expected val_fraction in (0, 1), but got {self.val_fraction}")
        bad = [n for n in self.networks if n not in NETWORKS]
        if bad or not self.networks:
            raise ValueError(f"Expected networks among {', '.join(NETWORKS)}, but got "
                             f"{self.networks}")
        if min((*self.taus, *self.margins, *self.alphas, self.hkr_margin), default=1) <= 0:
            raise ValueError("Expected positive τ, margins, α and hkr_margin")
        if self.epochs < 1:
            raise ValueError(f"Expected epochs >= 1, but got {self.epochs}")

    def values(self, sweep: str) -> tuple[float, ...]:
        return {"tau": self.taus, "margin": self.margins, "alpha": self.alphas}[sweep]

    def net_fields(self, network: str) -> tuple[str, dict]:
        """(model name, fields) of network 'paper' or 'onelip'."""
        if network == "paper":
            return "convnet", _fields("convnet", dict(self.paper_net))
        return "lipconvnet", _fields("lipconvnet", dict(self.onelip_net))

    @classmethod
    def quick(cls) -> "ParetoConfig":
        """Smoke settings: two values a loss, 4,000 training images, 3 epochs, narrow
        networks; on the scikit-learn digits unless ``--data`` is given."""
        return cls(data="digits", val_fraction=0.2, n_train=4000, n_val=1000,
                   taus=(0.1, 3.0), margins=(10.0, 50.0), alphas=(10.0, 100.0), epochs=3,
                   batch_size=128, lr=3e-3,
                   paper_net=(("preset", "bethune-vgg"), ("width", 16)),
                   onelip_net=(("width", 16), ("blocks", 3), ("depth", 2)))

    @classmethod
    def full(cls) -> "ParetoConfig":
        """The paper's sweeps (18 values) for both networks on ``--data folder:DIR``: 36
        sub-runs of 60 epochs over 45,000 images, sized for a GPU."""
        return cls()


def _fields(model: str, fields: dict) -> dict:
    """``fields`` with its "preset" expanded (explicit fields override the preset's)."""
    from onelip import models

    fields = dict(fields)
    preset = fields.pop("preset", None)
    return {**(dict(models.presets(model)[preset]) if preset else {}), **fields}


def _loss(cfg: ParetoConfig, sweep: str, value: float):
    if sweep == "tau":
        return losses.TauCrossEntropyLoss(value)
    if sweep == "margin":
        return losses.MulticlassHingeLoss(value / 255, mode="top2")
    return losses.MulticlassHKRLoss(value, cfg.hkr_margin / 255, mode="top2")


def _data(cfg: ParetoConfig) -> vision.ImageData:
    if cfg.data is None:
        raise ArgumentError("pareto's full protocol trains on CIFAR-10: pass ",
                            Argument("data", "data='folder:DIR'"),
                            " (the training images as an image folder), or use ",
                            Argument("quick", "quick=True"))
    return vision.load(cfg.data, val_fraction=cfg.val_fraction, n_val=cfg.n_val, seed=cfg.seed)


def _sub_run(cfg: ParetoConfig, network: str, sweep: str, value: float, runs: SubRuns,
             pool: list) -> dict:
    if not pool:
        pool.append(_data(cfg))  # decoded once per claim, on the first sub-run that runs
    data = vision.subset(pool[0], cfg.n_train, seed=cfg.seed)
    model_name, fields = cfg.net_fields(network)
    net = vision.build_network(model_name, fields, data, seed=cfg.seed,
                               normalize=network == "onelip")
    r = vision.train_and_certify(net, data, _loss(cfg, sweep, value), epochs=cfg.epochs,
                                 lr=cfg.lr, batch_size=cfg.batch_size, augment=cfg.augment,
                                 seed=cfg.seed, train_eval=False, runs=runs,
                                 name=f"{network} {sweep}={value:g}")
    r["params"] = sum(p.numel() for p in net.parameters())
    r["data_name"] = data.name
    return r


def run(cfg: ParetoConfig, *, out: Path | None = None, progress: bool = True,
        deadline: float | None = None) -> dict:
    """Run the sweeps; returns the JSON results (figures: :func:`plot`). With ``deadline``
    (:func:`time.monotonic`), the sub-runs not started by then are left out and named in
    ``results["subruns"]["not_run"]``; the tables and verdicts use the points at hand."""
    base = common.config_dict(cfg)
    if cfg.data is None:
        _data(cfg)
    shared = {k: base[k] for k in ("data", "val_fraction", "n_train", "n_val", "epochs",
                                   "batch_size", "lr", "augment", "seed")}
    total = len(cfg.networks) * sum(len(cfg.values(s)) for s in SWEEPS)
    nets: dict = {}
    pool: list = []
    with SubRuns(CLAIM, out, total=total, progress=progress,
                 deadline=deadline, partial=True) as runs:
        for network in cfg.networks:
            model_name, fields = cfg.net_fields(network)
            nets[network] = {}
            for sweep in SWEEPS:
                nets[network][sweep] = []
                for value in cfg.values(sweep):
                    key = {"claim": CLAIM, "network": [model_name, fields], "sweep": sweep,
                           "value": value, **shared,
                           **({"hkr_margin": cfg.hkr_margin} if sweep == "alpha" else {})}
                    r = runs(f"{network} {sweep}={value:g}", key,
                             lambda: _sub_run(cfg, network, sweep, value, runs, pool))
                    if r is not None:  # None: left out by the time budget (stats' not_run)
                        nets[network][sweep].append({"value": value, **r})
        runs.require_some()
        nets = {n: sw for n, sw in nets.items() if any(sw.values())}  # a network with no point
        stats = runs.stats()
    results = {"claim": CLAIM, "config": base, "networks": nets, "subruns": stats}
    results["tables"] = tables(results)
    results["verdicts"] = verdicts(results)
    return results


# ==== tables and verdicts (from the stored results alone) ===================================


def _points(rs_by_sweep: dict) -> list[tuple[float, float]]:
    return [(r["val_acc"], r["certified"]["36"]) for rs in rs_by_sweep.values() for r in rs]


def _protocol(results: dict) -> str:
    cfg = results["config"]
    any_run = next((r for n in results["networks"].values() for rs in n.values() for r in rs),
                   {})
    data = cfg.get("data") or "?"
    if str(data).startswith("folder:"):
        data = "CIFAR-10 JPEG (the paper: the original PNG-equivalent set)"
    return (f"{data}, {any_run.get('n_train', '?'):,} training / {any_run.get('n_val', '?'):,} "
            f"validation images, {cfg['epochs']} epochs (the paper: more), batch "
            f"{cfg['batch_size']} (the paper: 512), Adam one-cycle lr {cfg['lr']:g} (the paper: "
            f"Adam + cosine), augmentation {'+'.join(cfg['augment']) or 'none'} (the paper: "
            f"flips, colour jitter, resize-crop), on {any_run.get('device', '?')}")


def tables(results: dict) -> list[dict]:
    rows = []
    for network, sweeps in results["networks"].items():
        for sweep, rs in sweeps.items():
            for r in rs:
                rows.append([_NET_LABEL[network], _LABEL[sweep], f"{r['value']:g}",
                             f"{100 * r['val_acc']:.1f}",
                             *[f"{100 * r['certified'][str(e)]:.1f}" for e in vision.EPS_255],
                             f"{r['seconds']:.0f} s, {r.get('device', '?')}"])
    out = [table(f"Validation clean and certified accuracy (%) by loss: {_protocol(results)}",
                 ["network", "loss", "value", "clean (val)",
                  *[f"cert@{e}/255 (val)" for e in vision.EPS_255], "trained in"], rows)]
    fr = [["paper (Fig. 3, CIFAR-10)", ", ".join(f"({100 * c:.1f}, {100 * r:.1f})"
                                                  for c, r in PAPER_FRONT)]]
    for network, sweeps in results["networks"].items():
        fr.append([_NET_LABEL[network], ", ".join(f"({100 * c:.1f}, {100 * r:.1f})"
                                                   for c, r in front(_points(sweeps)))])
    out.append(table("Pareto fronts: (validation clean %, certified % at 36/255)",
                     ["front", "points"], fr))
    return out


def verdicts(results: dict) -> list[dict]:
    """The verdict rows, from the stored results alone."""
    nets = results["networks"]
    proto = _protocol(results)
    out = []
    paper_front = "; ".join(f"{100 * r:.1f} % at {100 * c:.1f} % clean" for c, r in
                            PAPER_FRONT[:1] + PAPER_FRONT[4:5] + PAPER_FRONT[-1:])
    if "paper" in nets:
        pts = _points(nets["paper"])
        gap = domination_gap(pts, PAPER_FRONT)
        out.append(Verdict(
            "Fig. 3: the paper's VGG in onelip lands on the paper's front",
            f"the paper's ≈0.4M VGG reaches the front {paper_front} (Fig. 3, validation, "
            f"CIFAR-10); target: within {100 * WITHIN:.0f} points of it",
            f"domination gap {100 * gap:.1f} points (the most any paper point beats our best "
            f"point in clean or certified accuracy); our front "
            f"{', '.join(f'({100 * c:.1f}, {100 * r:.1f})' for c, r in front(pts))}. "
            f"Protocol: {proto}",
            gap <= WITHIN).as_dict())
    if "onelip" in nets:
        pts = _points(nets["onelip"])
        gap = domination_gap(pts, PAPER_FRONT)
        at70 = certified_at_clean(pts, 0.70)
        out.append(Verdict(
            "onelip's best network dominates the paper's front (Fig. 3)",
            "every point of the paper's front (Fig. 3) has an onelip point with at least its "
            "clean and its certified accuracy at 36/255; at 70 % clean ≥ 55 % certified (the "
            "paper: 44 %)",
            f"domination gap {100 * gap:.1f} points; at ≥ 70 % clean: "
            f"{'no point' if at70 is None else f'{100 * at70:.1f} % certified'}. "
            f"Protocol: {proto}",
            gap == 0.0 and at70 is not None and at70 >= TARGET_AT_70).as_dict())
    for network, sweeps in nets.items():
        rs = sweeps.get("tau", [])
        if len(rs) >= 2:
            lo, hi = min(rs, key=lambda r: r["value"]), max(rs, key=lambda r: r["value"])
            out.append(Verdict(
                f"Fig. 3, τ-CE, {_NET_LABEL[network]}: small τ robust, large τ accurate",
                "along the front, the smallest τ gives the most certified and the largest τ "
                "the most accurate classifier (Fig. 3; the paper's τ = 0.05 … 3)",
                f"τ = {lo['value']:g}: {100 * lo['val_acc']:.1f} % clean / "
                f"{100 * lo['certified']['36']:.1f} % cert; τ = {hi['value']:g}: "
                f"{100 * hi['val_acc']:.1f} % / {100 * hi['certified']['36']:.1f} %",
                lo["certified"]["36"] >= hi["certified"]["36"]
                and hi["val_acc"] >= lo["val_acc"]).as_dict())
    return out


# ==== figures ===============================================================================


def plot(results: dict, outdir: Path) -> list[str]:
    """Validation clean vs certified accuracy at 36/255: the paper's points and front, and
    each network's sweeps and front."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.6, 4.6), layout="constrained")
    ax = fig.subplots()
    pc, pr = zip(*PAPER_POINTS)
    ax.scatter(pc, pr, marker="x", color="0.35", label="paper, Fig. 3 (CIFAR-10)")
    fc, fr = zip(*PAPER_FRONT)
    ax.plot(fc, fr, color="0.35", ls="--", lw=0.8)
    markers = {"tau": "o", "margin": "s", "alpha": "^"}
    colors = {"paper": "#a50f15", "onelip": "#08519c"}
    for network, sweeps in results["networks"].items():
        for sweep, rs in sweeps.items():
            if not rs:
                continue
            ax.scatter([r["val_acc"] for r in rs], [r["certified"]["36"] for r in rs],
                       marker=markers[sweep], color=colors[network], alpha=0.8,
                       label=f"{_NET_LABEL[network]}, {_LABEL[sweep]}")
        f = front(_points(sweeps))
        if f:
            ax.plot(*zip(*f), color=colors[network], lw=1)
    ax.set_xlabel("clean accuracy (validation)")
    ax.set_ylabel("certified accuracy at ε = 36/255 (validation)")
    ax.set_title("Accuracy / robustness front (the paper's Fig. 3)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    common.save_png(fig, Path(outdir) / "pareto.png")
    return ["pareto.png"]

